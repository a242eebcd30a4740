// Package handler is kv's endpoints: a thin layer over the store.
package handler

import (
	"context"
	"errors"
	"time"

	pb "github.com/micromesh/micromesh/examples/kv/proto"
	merrors "github.com/micromesh/micromesh/service/errors"
	"github.com/micromesh/micromesh/service/store"
)

// Kv answers Put, Get and List from the store (table "kv" by default: the
// service's name).
type Kv struct {
	pb.UnimplementedKvServer
	Store *store.Client
}

// Put stores a value.
func (h *Kv) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	if req.GetKey() == "" {
		return nil, merrors.BadRequest("kv.put", "key is required")
	}
	var opts []store.Option
	if s := req.GetTtlSeconds(); s > 0 {
		opts = append(opts, store.TTL(time.Duration(s)*time.Second))
	}
	if err := h.Store.Write(ctx, &store.Record{Key: req.GetKey(), Value: []byte(req.GetValue())}, opts...); err != nil {
		return nil, err
	}
	return &pb.PutResponse{}, nil
}

// Get reads a value.
func (h *Kv) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	recs, err := h.Store.Read(ctx, req.GetKey())
	if errors.Is(err, store.ErrNotFound) {
		return nil, merrors.NotFound("kv.get", "no value at %q", req.GetKey())
	}
	if err != nil {
		return nil, err
	}
	return &pb.GetResponse{Value: string(recs[0].Value)}, nil
}

// List lists keys.
func (h *Kv) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	keys, err := h.Store.List(ctx, store.ListPrefix(req.GetPrefix()))
	if err != nil {
		return nil, err
	}
	return &pb.ListResponse{Keys: keys}, nil
}
