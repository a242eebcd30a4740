// Package config is the framework's client of the config primitive: the
// namespace's JSON tree, by dotted path, through the service's sidecar to
// config.micromesh.
//
//	var size int
//	v, err := config.Get(ctx, "db.pool.size")
//	err = v.Scan(&size)
//	_, err = config.Set(ctx, "db.pool", map[string]any{"size": 20})
//	w, err := config.Watch(ctx, "db.pool")
package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	configv1 "github.com/micromesh/micromesh/proto/config/v1"
	"github.com/micromesh/micromesh/service"
)

// ServiceName is the config service's name on the mesh.
const ServiceName = "config.micromesh"

// Errors.
var (
	ErrNotFound = errors.New("config: not found")
	// ErrConflict: the tree moved on since the revision given.
	ErrConflict = errors.New("config: conflict")
)

// Value is a JSON value at a path, with the tree's revision.
type Value struct {
	JSON     []byte
	Revision uint64
	Deleted  bool // from Watch: the path no longer exists
}

// Scan decodes the value into v.
func (v *Value) Scan(into any) error { return json.Unmarshal(v.JSON, into) }

type options struct {
	secret    bool
	readers   []string
	revision  uint64
	namespace string
}

// Option changes one call.
type Option func(*options)

// Secret: Set stores the value encrypted; Get decrypts secrets (when the
// caller may read them) instead of showing "[secret]".
func Secret() Option { return func(o *options) { o.secret = true } }

// Readers limits a secret to these services of the namespace.
func Readers(services ...string) Option { return func(o *options) { o.readers = services } }

// Revision makes Set or Delete apply only if the tree is still at rev.
func Revision(rev uint64) Option { return func(o *options) { o.revision = rev } }

// Namespace acts in another namespace (the platform's identities only).
func Namespace(ns string) Option { return func(o *options) { o.namespace = ns } }

func apply(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

func wrap(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, status.Convert(err).Message())
	case codes.Aborted:
		return fmt.Errorf("%w: %s", ErrConflict, status.Convert(err).Message())
	}
	return err
}

// Client calls the config service over a connection to it.
type Client struct{ c configv1.ConfigServiceClient }

// NewClient uses conn (a connection to the config service through a
// sidecar).
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{c: configv1.NewConfigServiceClient(conn)}
}

// Get returns the value at path.
func (c *Client) Get(ctx context.Context, path string, opts ...Option) (*Value, error) {
	o := apply(opts)
	resp, err := c.c.Get(ctx, &configv1.GetRequest{Path: path, Secret: o.secret, Namespace: o.namespace})
	if err != nil {
		return nil, wrap(err)
	}
	return &Value{JSON: resp.GetValue(), Revision: resp.GetRevision()}, nil
}

// Set puts v (marshalled to JSON; a json.RawMessage as it is) at path and
// returns the tree's new revision.
func (c *Client) Set(ctx context.Context, path string, v any, opts ...Option) (uint64, error) {
	o := apply(opts)
	b, ok := v.(json.RawMessage)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return 0, err
		}
	}
	resp, err := c.c.Set(ctx, &configv1.SetRequest{Path: path, Value: b, Secret: o.secret, Readers: o.readers, Revision: o.revision, Namespace: o.namespace})
	if err != nil {
		return 0, wrap(err)
	}
	return resp.GetRevision(), nil
}

// Delete removes path and returns the tree's new revision.
func (c *Client) Delete(ctx context.Context, path string, opts ...Option) (uint64, error) {
	o := apply(opts)
	resp, err := c.c.Delete(ctx, &configv1.DeleteRequest{Path: path, Revision: o.revision, Namespace: o.namespace})
	if err != nil {
		return 0, wrap(err)
	}
	return resp.GetRevision(), nil
}

// Watcher yields the value at a path: first as it is, then after each
// change to it.
type Watcher struct {
	stream grpc.ServerStreamingClient[configv1.WatchResponse]
}

// Watch watches path until ctx ends.
func (c *Client) Watch(ctx context.Context, path string, opts ...Option) (*Watcher, error) {
	o := apply(opts)
	stream, err := c.c.Watch(ctx, &configv1.WatchRequest{Path: path, Namespace: o.namespace})
	if err != nil {
		return nil, wrap(err)
	}
	return &Watcher{stream: stream}, nil
}

// Next waits for the next value.
func (w *Watcher) Next() (*Value, error) {
	resp, err := w.stream.Recv()
	if err != nil {
		return nil, wrap(err)
	}
	return &Value{JSON: resp.GetValue(), Revision: resp.GetRevision(), Deleted: resp.GetDeleted()}, nil
}

var defaultClient = service.DialOnce(ServiceName, NewClient)

// Get reads through the service's sidecar; see Client.Get.
func Get(ctx context.Context, path string, opts ...Option) (*Value, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Get(ctx, path, opts...)
}

// Set writes through the service's sidecar; see Client.Set.
func Set(ctx context.Context, path string, v any, opts ...Option) (uint64, error) {
	c, err := defaultClient()
	if err != nil {
		return 0, err
	}
	return c.Set(ctx, path, v, opts...)
}

// Delete deletes through the service's sidecar; see Client.Delete.
func Delete(ctx context.Context, path string, opts ...Option) (uint64, error) {
	c, err := defaultClient()
	if err != nil {
		return 0, err
	}
	return c.Delete(ctx, path, opts...)
}

// Watch watches through the service's sidecar; see Client.Watch.
func Watch(ctx context.Context, path string, opts ...Option) (*Watcher, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Watch(ctx, path, opts...)
}
