// Package store is the framework's client of the store primitive: records
// in the caller's database (its namespace), in a table named after the
// calling service unless Table says otherwise. Calls go through the
// service's sidecar to the store service (store.micromesh).
//
//	err := store.Write(ctx, &store.Record{Key: "user/1", Value: data}, store.TTL(time.Hour))
//	recs, err := store.Read(ctx, "user/", store.Prefix(), store.Limit(10))
//	if errors.Is(err, store.ErrNotFound) { ... }
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/micromesh/micromesh/proto/store/v1"
	"github.com/micromesh/micromesh/service"
)

// ServiceName is the store's name on the mesh.
const ServiceName = "store.micromesh"

// Record is a stored record.
type Record struct {
	Key      string
	Value    []byte
	Metadata map[string]string
	// Expiry is when it expires; zero for never.
	Expiry time.Time
}

// ErrNotFound is Read's error for a key that is not there.
var ErrNotFound = errors.New("store: not found")

type options struct {
	scope          storev1.Scope
	prefix, suffix bool
	listPrefix     string
	listSuffix     string
	limit, offset  uint32
	order          storev1.Order
	ttl            time.Duration
}

// Option changes one call.
type Option func(*options)

// Table picks a table other than the calling service's.
func Table(t string) Option { return func(o *options) { o.scope.Table = t } }

// Database picks a database; only the platform's identities may name one
// other than their namespace's.
func Database(d string) Option { return func(o *options) { o.scope.Database = d } }

// Prefix makes Read's key a prefix of the keys to read.
func Prefix() Option { return func(o *options) { o.prefix = true } }

// Suffix makes Read's key a suffix of the keys to read.
func Suffix() Option { return func(o *options) { o.suffix = true } }

// ListPrefix keeps List's keys that start with p.
func ListPrefix(p string) Option { return func(o *options) { o.listPrefix = p } }

// ListSuffix keeps List's keys that end with s.
func ListSuffix(s string) Option { return func(o *options) { o.listSuffix = s } }

// Limit caps the results.
func Limit(n uint32) Option { return func(o *options) { o.limit = n } }

// Offset skips results.
func Offset(n uint32) Option { return func(o *options) { o.offset = n } }

// Desc orders results by key, descending.
func Desc() Option { return func(o *options) { o.order = storev1.Order_ORDER_DESC } }

// TTL makes a written record expire after d.
func TTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

func apply(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

// Client calls the store over a connection to it.
type Client struct {
	c storev1.StoreServiceClient
}

// NewClient uses conn (a connection to the store through a sidecar).
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{c: storev1.NewStoreServiceClient(conn)}
}

// Read reads key (or, with Prefix or Suffix, every key it starts or ends).
func (c *Client) Read(ctx context.Context, key string, opts ...Option) ([]*Record, error) {
	o := apply(opts)
	resp, err := c.c.Read(ctx, &storev1.ReadRequest{Scope: &o.scope, Key: key, Prefix: o.prefix, Suffix: o.suffix,
		Limit: o.limit, Offset: o.offset, Order: o.order})
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]*Record, 0, len(resp.GetRecords()))
	for _, r := range resp.GetRecords() {
		rec := &Record{Key: r.GetKey(), Value: r.GetValue(), Metadata: r.GetMetadata()}
		if r.GetExpiry() != nil {
			rec.Expiry = r.GetExpiry().AsTime()
		}
		out = append(out, rec)
	}
	return out, nil
}

// Write stores r; it is durable when Write returns.
func (c *Client) Write(ctx context.Context, r *Record, opts ...Option) error {
	o := apply(opts)
	req := &storev1.WriteRequest{Scope: &o.scope, Record: &storev1.Record{Key: r.Key, Value: r.Value, Metadata: r.Metadata}}
	if !r.Expiry.IsZero() {
		req.Record.Expiry = timestamppb.New(r.Expiry)
	}
	if o.ttl != 0 {
		req.Ttl = durationpb.New(o.ttl)
	}
	_, err := c.c.Write(ctx, req)
	return wrap(err)
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key string, opts ...Option) error {
	o := apply(opts)
	_, err := c.c.Delete(ctx, &storev1.DeleteRequest{Scope: &o.scope, Key: key})
	return wrap(err)
}

// List lists keys (ListPrefix, ListSuffix, Limit, Offset, Desc).
func (c *Client) List(ctx context.Context, opts ...Option) ([]string, error) {
	o := apply(opts)
	resp, err := c.c.List(ctx, &storev1.ListRequest{Scope: &o.scope, Prefix: o.listPrefix, Suffix: o.listSuffix,
		Limit: o.limit, Offset: o.offset, Order: o.order})
	if err != nil {
		return nil, wrap(err)
	}
	return resp.GetKeys(), nil
}

// Databases lists the databases the caller may see.
func (c *Client) Databases(ctx context.Context) ([]string, error) {
	resp, err := c.c.Databases(ctx, &storev1.DatabasesRequest{})
	if err != nil {
		return nil, wrap(err)
	}
	return resp.GetDatabases(), nil
}

// Tables lists a database's tables ("" for the caller's).
func (c *Client) Tables(ctx context.Context, database string) ([]string, error) {
	resp, err := c.c.Tables(ctx, &storev1.TablesRequest{Database: database})
	if err != nil {
		return nil, wrap(err)
	}
	return resp.GetTables(), nil
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, status.Convert(err).Message())
	}
	return err
}

var defaultClient = service.DialOnce(ServiceName, NewClient)

// Read reads through the service's sidecar; see Client.Read.
func Read(ctx context.Context, key string, opts ...Option) ([]*Record, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Read(ctx, key, opts...)
}

// Write writes through the service's sidecar; see Client.Write.
func Write(ctx context.Context, r *Record, opts ...Option) error {
	c, err := defaultClient()
	if err != nil {
		return err
	}
	return c.Write(ctx, r, opts...)
}

// Delete deletes through the service's sidecar; see Client.Delete.
func Delete(ctx context.Context, key string, opts ...Option) error {
	c, err := defaultClient()
	if err != nil {
		return err
	}
	return c.Delete(ctx, key, opts...)
}

// List lists through the service's sidecar; see Client.List.
func List(ctx context.Context, opts ...Option) ([]string, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.List(ctx, opts...)
}
