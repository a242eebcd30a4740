// Package names checks the names and metadata the primitives take —
// topics, queue and consumer groups, metadata keys — so that each refuses
// the same things with the same words.
package names

import (
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxMetadata bounds the metadata entries of a message or event.
const MaxMetadata = 32

var (
	topicRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Topic checks a topic of at most max characters: INVALID_ARGUMENT if bad.
func Topic(t string, max int) error {
	if t == "" || len(t) > max || !topicRE.MatchString(t) {
		return status.Errorf(codes.InvalidArgument, "topic %q: 1–%d characters of A-Z a-z 0-9 _ - and '.', no empty segment, no wildcards", t, max)
	}
	return nil
}

// Name checks a group or queue name.
func Name(kind, s string) error {
	if !nameRE.MatchString(s) {
		return status.Errorf(codes.InvalidArgument, "%s %q: 1–64 of A-Z a-z 0-9 _ -", kind, s)
	}
	return nil
}

// Metadata checks metadata: at most MaxMetadata entries, keys like names,
// values on one line.
func Metadata(md map[string]string) error {
	if len(md) > MaxMetadata {
		return status.Errorf(codes.InvalidArgument, "%d metadata entries (limit %d)", len(md), MaxMetadata)
	}
	for k, v := range md {
		if !nameRE.MatchString(k) || strings.ContainsAny(v, "\r\n") {
			return status.Errorf(codes.InvalidArgument, "metadata %q: keys 1–64 of A-Z a-z 0-9 _ -, values on one line", k)
		}
	}
	return nil
}
