// Package xdswiretest hands tests the xdswire form of resources built with
// go-control-plane's types: marshalled and decoded, as a sidecar receives
// them, so a test writes resources the way the control plane does.
package xdswiretest

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// Decode returns m as xdswire decodes it (T: *xdswire.Listener for a
// listener, and so on).
func Decode[T any](t testing.TB, m proto.Message) T {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := xdswire.Decode(&xdswire.Any{TypeURL: a.TypeUrl, Value: a.Value})
	if err != nil {
		t.Fatalf("decode %s: %v", a.TypeUrl, err)
	}
	v, ok := got.(T)
	if !ok {
		t.Fatalf("%s decodes to %T", a.TypeUrl, got)
	}
	return v
}

// DecodeAll decodes each of ms.
func DecodeAll[T any, M proto.Message](t testing.TB, ms []M) []T {
	t.Helper()
	out := make([]T, 0, len(ms))
	for _, m := range ms {
		out = append(out, Decode[T](t, m))
	}
	return out
}
