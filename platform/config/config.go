// Package config is the config primitive: one JSON tree per namespace on
// JetStream KV (bucket micromesh_config, a key per namespace), addressed by
// dotted paths. Every write is a compare-and-set on the tree's revision:
// a Set without a revision retries on conflict (nothing is lost to a
// concurrent writer), a Set with one fails with ABORTED if the tree moved
// on. Secrets are sealed with AES-256-GCM (bound to namespace and path) and
// read back only when asked, by the platform or the namespace's services
// the secret names as readers.
package config

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/platform/tenancy"
	configv1 "github.com/micromesh/micromesh/proto/config/v1"
)

// Bucket is the KV bucket holding every namespace's tree.
const Bucket = "micromesh_config"

// Server serves the Config API.
type Server struct {
	configv1.UnimplementedConfigServiceServer
	kv     jetstream.KeyValue
	sealer *sealer
}

// NewServer opens (or creates) the bucket; key encrypts secrets (32
// bytes).
func NewServer(ctx context.Context, nc *nats.Conn, key []byte) (*Server, error) {
	sl, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	return &Server{kv: kv, sealer: sl}, nil
}

func unavailable(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Errorf(codes.Unavailable, "config: %v", err)
}

// load reads a namespace's tree and its revision (0 if it has none).
func (s *Server) load(ctx context.Context, ns string) (any, uint64, error) {
	e, err := s.kv.Get(ctx, ns)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return map[string]any{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	t, err := decodeTree(e.Value())
	return t, e.Revision(), err
}

// store writes the tree if it is still at rev; the bool is false on a
// conflict.
func (s *Server) store(ctx context.Context, ns string, tree any, rev uint64) (uint64, bool, error) {
	b, err := encodeTree(tree)
	if err != nil {
		return 0, false, err
	}
	var n uint64
	if rev == 0 {
		n, err = s.kv.Create(ctx, ns, b)
	} else {
		n, err = s.kv.Update(ctx, ns, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, false, nil
	}
	return n, err == nil, err
}

// change applies f to the namespace's tree atomically: with want 0 it
// retries on conflicts; with a revision it fails with ABORTED if the tree
// is not at it.
func (s *Server) change(ctx context.Context, ns string, want uint64, f func(tree any) (any, error)) (uint64, error) {
	for {
		tree, rev, err := s.load(ctx, ns)
		if err != nil {
			return 0, unavailable(err)
		}
		if want != 0 && want != rev {
			return 0, status.Errorf(codes.Aborted, "the config of %s is at revision %d, not %d: read it again and retry", ns, rev, want)
		}
		tree, err = f(tree)
		if err != nil {
			return 0, err
		}
		n, ok, err := s.store(ctx, ns, tree, rev)
		if err != nil {
			return 0, unavailable(err)
		}
		if ok {
			return n, nil
		}
		if want != 0 {
			return 0, status.Errorf(codes.Aborted, "the config of %s changed under this write (it was at revision %d): read it again and retry", ns, want)
		}
	}
}

// view reveals or masks the secrets in the value at path for the caller.
func (s *Server) view(v any, decrypt bool, caller identity.ID, ns, path string) (any, error) {
	// Work on a copy: the tree may be shared with another reader.
	b, _ := json.Marshal(v)
	var cp any
	_ = json.Unmarshal(b, &cp)
	reader := caller.Name
	if caller.Kind == identity.KindUser {
		reader = "user:" + reader // an account named as a service is not that service
	}
	out, err := s.sealer.reveal(cp, decrypt, reader, tenancy.IsPlatform(caller), ns, path)
	if errors.Is(err, errNoRight) {
		return nil, status.Errorf(codes.PermissionDenied, "%s: %v", caller, err)
	}
	return out, err
}

// Get implements the Config API.
func (s *Server) Get(ctx context.Context, req *configv1.GetRequest) (*configv1.GetResponse, error) {
	caller, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	path, err := parsePath(req.GetPath())
	if err != nil {
		return nil, err
	}
	tree, rev, err := s.load(ctx, ns)
	if err != nil {
		return nil, unavailable(err)
	}
	v, ok := get(tree, path)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no config at %q in namespace %s", req.GetPath(), ns)
	}
	v, err = s.view(v, req.GetSecret(), caller, ns, req.GetPath())
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, unavailable(err)
	}
	return &configv1.GetResponse{Value: b, Revision: rev}, nil
}

// Set implements the Config API.
func (s *Server) Set(ctx context.Context, req *configv1.SetRequest) (*configv1.SetResponse, error) {
	_, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	path, err := parsePath(req.GetPath())
	if err != nil {
		return nil, err
	}
	v, err := parseJSON(req.GetValue())
	if err != nil {
		return nil, err
	}
	if m, ok := v.(map[string]any); ok && containsKey(m, secretKey) {
		return nil, status.Errorf(codes.InvalidArgument, "%q is reserved for secrets: use secret=true", secretKey)
	}
	for _, r := range req.GetReaders() {
		if err := identity.ValidateName("reader", r); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if len(req.GetReaders()) > 0 && !req.GetSecret() {
		return nil, status.Error(codes.InvalidArgument, "readers apply to secrets only")
	}
	if req.GetSecret() {
		if len(path) == 0 {
			return nil, status.Error(codes.InvalidArgument, "a secret needs a path")
		}
		if v, err = s.sealer.seal(v, req.GetReaders(), ns+"/"+req.GetPath()); err != nil {
			return nil, unavailable(err)
		}
	}
	rev, err := s.change(ctx, ns, req.GetRevision(), func(tree any) (any, error) {
		return set(tree, path, v), nil
	})
	if err != nil {
		return nil, err
	}
	return &configv1.SetResponse{Revision: rev}, nil
}

func containsKey(m map[string]any, k string) bool {
	for key, v := range m {
		if key == k {
			return true
		}
		if child, ok := v.(map[string]any); ok && containsKey(child, k) {
			return true
		}
	}
	return false
}

// Delete implements the Config API.
func (s *Server) Delete(ctx context.Context, req *configv1.DeleteRequest) (*configv1.DeleteResponse, error) {
	_, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	path, err := parsePath(req.GetPath())
	if err != nil {
		return nil, err
	}
	rev, err := s.change(ctx, ns, req.GetRevision(), func(tree any) (any, error) {
		t, ok := del(tree, path)
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no config at %q in namespace %s", req.GetPath(), ns)
		}
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return &configv1.DeleteResponse{Revision: rev}, nil
}

// Watch implements the Config API.
func (s *Server) Watch(req *configv1.WatchRequest, stream grpc.ServerStreamingServer[configv1.WatchResponse]) error {
	ctx := stream.Context()
	caller, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return err
	}
	path, err := parsePath(req.GetPath())
	if err != nil {
		return err
	}
	w, err := s.kv.Watch(ctx, ns)
	if err != nil {
		return unavailable(err)
	}
	defer func() { _ = w.Stop() }()
	var last []byte
	sent := false
	send := func(tree any, rev uint64) error {
		v, ok := get(tree, path)
		resp := &configv1.WatchResponse{Revision: rev, Deleted: !ok}
		if ok {
			v, err := s.view(v, false, caller, ns, req.GetPath())
			if err != nil {
				return err
			}
			if resp.Value, err = json.Marshal(v); err != nil {
				return err
			}
		}
		if sent && string(resp.Value) == string(last) {
			return nil // a change elsewhere in the tree
		}
		last, sent = resp.Value, true
		return stream.Send(resp)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "config: the watch ended")
			}
			if e == nil { // the initial values are in
				if !sent {
					if err := send(map[string]any{}, 0); err != nil {
						return err
					}
				}
				continue
			}
			tree := any(map[string]any{})
			if e.Operation() == jetstream.KeyValuePut {
				if tree, err = decodeTree(e.Value()); err != nil {
					return unavailable(err)
				}
			}
			if err := send(tree, e.Revision()); err != nil {
				return err
			}
		}
	}
}
