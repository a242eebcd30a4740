// Package bootstrap writes the documents a proxy starts from: the xDS
// bootstrap of a proxyless gRPC client (gRFC A27, for GRPC_XDS_BOOTSTRAP)
// and Envoy's v3 bootstrap. It only renders; callers write the files.
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/micromesh/micromesh/xds"
)

// Files are a workload's credential files, as `meshctl cert issue` writes them.
type Files struct {
	Cert   string // leaf + intermediate, PEM
	Key    string // PEM
	Bundle string // trust bundle, PEM
}

// GRPCOptions describe a proxyless gRPC client.
type GRPCOptions struct {
	ServerURI string // the control plane, host:port
	NodeID    string
	Cluster   string // node.cluster: the service name
	Region    string
	Zone      string
	Files     Files
	// Refresh is how often gRPC rereads the certificate files (default 10m).
	Refresh time.Duration
}

// GRPC renders the bootstrap JSON of a proxyless gRPC client: mTLS to the
// control plane with the workload's certificate (A65 "tls" channel
// credentials), and a file_watcher certificate provider for mTLS to
// services (A29).
func GRPC(o GRPCOptions) ([]byte, error) {
	if o.ServerURI == "" || o.NodeID == "" {
		return nil, errors.New("bootstrap: the control plane address and the node ID are required")
	}
	if o.Files.Cert == "" || o.Files.Key == "" || o.Files.Bundle == "" {
		return nil, errors.New("bootstrap: certificate, key and bundle files are required")
	}
	if o.Refresh == 0 {
		o.Refresh = 10 * time.Minute
	}
	files := map[string]any{
		"certificate_file":    o.Files.Cert,
		"private_key_file":    o.Files.Key,
		"ca_certificate_file": o.Files.Bundle,
	}
	provider := map[string]any{
		"certificate_file":    o.Files.Cert,
		"private_key_file":    o.Files.Key,
		"ca_certificate_file": o.Files.Bundle,
		"refresh_interval":    fmt.Sprintf("%ds", int(o.Refresh.Seconds())),
	}
	node := map[string]any{
		"id":       o.NodeID,
		"cluster":  o.Cluster,
		"metadata": map[string]any{"kind": "proxyless"},
	}
	if o.Region != "" || o.Zone != "" {
		node["locality"] = map[string]string{"region": o.Region, "zone": o.Zone}
	}
	doc := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      o.ServerURI,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": files}},
			"server_features": []string{"xds_v3"},
		}},
		"node": node,
		"certificate_providers": map[string]any{
			xds.CertProviderInstance: map[string]any{"plugin_name": "file_watcher", "config": provider},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}
