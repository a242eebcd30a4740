package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits.
const (
	MaxTree     = 1 << 20
	MaxSegments = 16
)

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// parsePath splits a dotted path; "" is the root.
func parsePath(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, ".")
	if len(segs) > MaxSegments {
		return nil, status.Errorf(codes.InvalidArgument, "path %q: at most %d segments", p, MaxSegments)
	}
	for _, s := range segs {
		if !segmentRE.MatchString(s) {
			return nil, status.Errorf(codes.InvalidArgument, "path %q: segments of 1–64 A-Z a-z 0-9 _ - separated by dots", p)
		}
	}
	return segs, nil
}

// parseJSON parses a value; the error says where it is wrong.
func parseJSON(b []byte) (any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, status.Errorf(codes.InvalidArgument, "value is not JSON: %v (at byte %d)", se, se.Offset)
		}
		return nil, status.Errorf(codes.InvalidArgument, "value is not JSON: %v", err)
	}
	return v, nil
}

// get returns the value at path in tree.
func get(tree any, path []string) (any, bool) {
	cur := tree
	for _, s := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[s]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// set puts v at path, creating objects on the way (replacing non-objects
// there), merging objects into objects; it returns the new tree.
func set(tree any, path []string, v any) any {
	if len(path) == 0 {
		return merge(tree, v)
	}
	m, ok := tree.(map[string]any)
	if !ok {
		m = map[string]any{}
	}
	m[path[0]] = set(m[path[0]], path[1:], v)
	return m
}

// merge merges v into old when both are objects (keys of v win, objects
// within merge again); otherwise v replaces old. A secret replaces.
func merge(old, v any) any {
	om, ok1 := old.(map[string]any)
	vm, ok2 := v.(map[string]any)
	if !ok1 || !ok2 || isSecret(om) || isSecret(vm) {
		return v
	}
	for k, nv := range vm {
		om[k] = merge(om[k], nv)
	}
	return om
}

// del removes path; false if it was not there.
func del(tree any, path []string) (any, bool) {
	if len(path) == 0 {
		return map[string]any{}, tree != nil
	}
	parent, ok := get(tree, path[:len(path)-1])
	if !ok {
		return tree, false
	}
	m, ok := parent.(map[string]any)
	if !ok {
		return tree, false
	}
	if _, ok := m[path[len(path)-1]]; !ok {
		return tree, false
	}
	delete(m, path[len(path)-1])
	return tree, true
}

func encodeTree(tree any) ([]byte, error) {
	b, err := json.Marshal(tree)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxTree {
		return nil, status.Errorf(codes.InvalidArgument, "the namespace's config would be %d bytes (limit %d)", len(b), MaxTree)
	}
	return b, nil
}

func decodeTree(b []byte) (any, error) {
	if len(b) == 0 {
		return map[string]any{}, nil
	}
	var t any
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("config: the stored tree is damaged: %w", err)
	}
	return t, nil
}
