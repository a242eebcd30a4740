package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/codegen"
	"github.com/micromesh/micromesh/internal/srcwatch"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
)

// How often run --watch looks at the source, and how long a change must
// hold still before it acts (an editor saving several files, a checkout).
const (
	watchInterval = 400 * time.Millisecond
	watchQuiet    = 300 * time.Millisecond
)

// watchEvent is one line of run --watch's output (-o json: one object a
// line).
type watchEvent struct {
	Time     time.Time `json:"time"`
	Event    string    `json:"event"` // watching, changed, generated, updated, failed, log
	Service  string    `json:"service"`
	Version  string    `json:"version,omitempty"` // the version running after it
	Files    []string  `json:"files,omitempty"`
	Error    string    `json:"error,omitempty"`
	Instance string    `json:"instance,omitempty"` // a log line's
	Line     string    `json:"line,omitempty"`
	Text     string    `json:"-"`
}

// watchSource rebuilds and updates the service run from dir each time its
// source changes — regenerating the Go of its .proto files first when one
// of them changed — until ctx ends (Ctrl-C), leaving it running, and
// shows the app's log lines meanwhile. A build that fails leaves the
// running version in place and says why.
func watchSource(ctx context.Context, g *globalOptions, s Streams, o *runOptions, dir string, svc *runtimev1.Service) error {
	name, version := svc.GetName(), svc.GetVersion()
	var mu sync.Mutex // the watch's lines and the app's, whole
	say := func(e watchEvent) {
		mu.Lock()
		defer mu.Unlock()
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		e.Service = name
		if e.Version == "" && e.Event != "log" {
			e.Version = version
		}
		if g.output == outputJSON {
			line, _ := json.Marshal(e)
			fmt.Fprintf(s.Out, "%s\n", line)
			return
		}
		fmt.Fprintf(s.Out, "%s %s\n", e.Time.Local().Format("15:04:05"), e.Text)
	}
	// The app's lines as they come, from every instance, new ones too.
	logsCtx, stopLogs := context.WithCancel(ctx)
	logsDone := make(chan struct{})
	defer func() { stopLogs(); <-logsDone }() // no line after the command's end
	go func() {
		defer close(logsDone)
		err := withRuntime(logsCtx, g, o.target.controlPlane, 0, func(ctx context.Context, c runtimev1.RuntimeServiceClient) error {
			stream, err := c.Logs(ctx, &runtimev1.LogsRequest{Name: name, Namespace: o.target.namespace, Follow: true, Since: timestamppb.Now()})
			if err != nil {
				return err
			}
			for {
				l, err := stream.Recv()
				if err != nil {
					return err
				}
				if l.GetSource() != "app" { // the sidecars' lines: meshctl logs
					continue
				}
				say(watchEvent{Event: "log", Time: l.GetTime().AsTime(), Instance: l.GetInstance(), Line: l.GetLine(),
					Text: fmt.Sprintf("%s | %s", l.GetInstance(), l.GetLine())})
			}
		})
		if logsCtx.Err() == nil && err != nil {
			say(watchEvent{Event: "failed", Error: describe(err), Text: "the app's log lines stopped: " + describe(err) + " (meshctl logs " + name + " -f)"})
		}
	}()
	base, err := srcwatch.Take(dir)
	if err != nil {
		return err
	}
	say(watchEvent{Event: "watching", Text: fmt.Sprintf("watching %s: a change rebuilds %s and replaces its instances one by one (Ctrl-C stops watching; %s keeps running)", dir, name, name)})
	return srcwatch.Watch(ctx, dir, base, watchInterval, watchQuiet, func(ctx context.Context, changed []string) (srcwatch.Snapshot, error) {
		say(watchEvent{Event: "changed", Files: changed, Text: "changed: " + listSome(changed, 4)})
		if hasProto(changed) {
			if plugins, err := codegen.FindPlugins(); err != nil {
				say(watchEvent{Event: "failed", Error: err.Error(), Text: "not regenerating the .proto files' Go: " + err.Error()})
			} else if files, err := codegen.Generate(ctx, dir, plugins); err != nil {
				say(watchEvent{Event: "failed", Error: err.Error(), Text: fmt.Sprintf("not generated; %s keeps running version %s — fix it and save:\n%v", name, version, err)})
				return srcwatch.Take(dir) // nothing to build until the .proto is fixed
			} else {
				say(watchEvent{Event: "generated", Files: files, Text: "generated " + listSome(files, 4)})
			}
		}
		next, err := srcwatch.Take(dir) // what generate wrote is not a change
		if err != nil {
			return nil, err
		}
		// An update under way finishes even if Ctrl-C comes: its new
		// instances would otherwise be left half-started.
		var resp *runtimev1.UpdateResponse
		err = withRuntime(context.WithoutCancel(ctx), g, o.target.controlPlane, runtimeCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) (err error) {
			resp, err = c.Update(ctx, &runtimev1.UpdateRequest{Name: name, Namespace: o.target.namespace, Version: version})
			return err
		})
		if err != nil {
			msg := describe(err)
			say(watchEvent{Event: "failed", Error: msg, Text: fmt.Sprintf("update failed; %s keeps running version %s — fix it and save:\n%s", name, version, msg)})
			return next, nil
		}
		version = resp.GetService().GetVersion()
		say(watchEvent{Event: "updated", Version: version, Text: fmt.Sprintf("%s updated: version %s, %d instance(s)", name, version, len(resp.GetService().GetInstances()))})
		return next, nil
	})
}

func hasProto(files []string) bool {
	for _, f := range files {
		if strings.HasSuffix(f, ".proto") {
			return true
		}
	}
	return false
}

// listSome joins up to n names, then says how many more.
func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
