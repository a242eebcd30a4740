// Package version reports what build of Micromesh is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at build time with -ldflags "-X .../internal/version.Version=...".
var Version = "dev"

// Info describes the build.
type Info struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
	Module    string `json:"module"`
}

// Get returns the build's description.
func Get() Info {
	info := Info{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.Module = bi.Main.Path
	}
	return info
}
