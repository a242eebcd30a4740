package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/platform/tenancy"
	storev1 "github.com/micromesh/micromesh/proto/store/v1"
)

// Server serves a Backend as the Store API. It runs behind its sidecar,
// which verifies callers and names them in x-mesh-caller: the database is
// the caller's namespace, the table by default the caller's service. Only
// the platform's identities (namespace micromesh) may name a database.
type Server struct {
	storev1.UnimplementedStoreServiceServer
	b Backend
}

// NewServer serves b.
func NewServer(b Backend) *Server { return &Server{b: b} }

// DefaultTable is the table of a platform identity or an account that
// names none.
const DefaultTable = "default"

// scope resolves the request's scope against the caller.
func scope(ctx context.Context, req *storev1.Scope) (Scope, error) {
	id, ns, err := tenancy.Namespace(ctx, req.GetDatabase())
	if err != nil {
		return Scope{}, err
	}
	s := Scope{Database: ns, Table: id.Name}
	if tenancy.IsPlatform(id) || id.Kind == identity.KindUser { // a workload's own table is its name
		s.Table = DefaultTable
	}
	if t := req.GetTable(); t != "" {
		s.Table = t
	}
	if err := ValidateScope(s); err != nil {
		return Scope{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return s, nil
}

func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Unavailable, "store: "+err.Error())
	}
}

func order(o storev1.Order) Order {
	if o == storev1.Order_ORDER_DESC {
		return Desc
	}
	return Asc
}

// Read implements the Store API.
func (s *Server) Read(ctx context.Context, req *storev1.ReadRequest) (*storev1.ReadResponse, error) {
	sc, err := scope(ctx, req.GetScope())
	if err != nil {
		return nil, err
	}
	q := Query{Key: req.GetKey(), Prefix: req.GetPrefix(), Suffix: req.GetSuffix(), Limit: int(req.GetLimit()), Offset: int(req.GetOffset()), Order: order(req.GetOrder())}
	if err := ValidateQuery(q, true); err != nil {
		return nil, toStatus(err)
	}
	recs, err := s.b.Read(ctx, sc, q)
	if errors.Is(err, ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "%q is not in table %s of database %s", q.Key, sc.Table, sc.Database)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &storev1.ReadResponse{Records: make([]*storev1.Record, 0, len(recs))}
	for _, r := range recs {
		m := &storev1.Record{Key: r.Key, Value: r.Value, Metadata: r.Metadata}
		if !r.Expiry.IsZero() {
			m.Expiry = timestamppb.New(r.Expiry)
		}
		resp.Records = append(resp.Records, m)
	}
	return resp, nil
}

// Write implements the Store API.
func (s *Server) Write(ctx context.Context, req *storev1.WriteRequest) (*storev1.WriteResponse, error) {
	sc, err := scope(ctx, req.GetScope())
	if err != nil {
		return nil, err
	}
	in := req.GetRecord()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "no record")
	}
	r := Record{Key: in.GetKey(), Value: in.GetValue(), Metadata: in.GetMetadata()}
	if in.GetExpiry() != nil {
		r.Expiry = in.GetExpiry().AsTime()
	}
	if ttl := req.GetTtl(); ttl != nil {
		d := ttl.AsDuration()
		if d <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "ttl %v: must be positive (delete the record to remove it)", d)
		}
		r.Expiry = time.Now().Add(d)
	}
	if err := ValidateRecord(r); err != nil {
		return nil, toStatus(err)
	}
	if err := s.b.Write(ctx, sc, r); err != nil {
		return nil, toStatus(fmt.Errorf("writing %q: %w", r.Key, err))
	}
	return &storev1.WriteResponse{}, nil
}

// Delete implements the Store API.
func (s *Server) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	sc, err := scope(ctx, req.GetScope())
	if err != nil {
		return nil, err
	}
	if err := ValidateKey(req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.b.Delete(ctx, sc, req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	return &storev1.DeleteResponse{}, nil
}

// List implements the Store API.
func (s *Server) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	sc, err := scope(ctx, req.GetScope())
	if err != nil {
		return nil, err
	}
	q := Query{PrefixStr: req.GetPrefix(), SuffixStr: req.GetSuffix(), Limit: int(req.GetLimit()), Offset: int(req.GetOffset()), Order: order(req.GetOrder())}
	if err := ValidateQuery(q, false); err != nil {
		return nil, toStatus(err)
	}
	keys, err := s.b.List(ctx, sc, q)
	if err != nil {
		return nil, toStatus(err)
	}
	return &storev1.ListResponse{Keys: keys}, nil
}

// Databases implements the Store API: a workload sees its own.
func (s *Server) Databases(ctx context.Context, _ *storev1.DatabasesRequest) (*storev1.DatabasesResponse, error) {
	id, ns, err := tenancy.Namespace(ctx, "")
	if err != nil {
		return nil, err
	}
	all, err := s.b.Databases(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if tenancy.IsPlatform(id) {
		return &storev1.DatabasesResponse{Databases: all}, nil
	}
	out := []string{}
	for _, d := range all {
		if d == ns {
			out = append(out, d)
		}
	}
	return &storev1.DatabasesResponse{Databases: out}, nil
}

// Tables implements the Store API.
func (s *Server) Tables(ctx context.Context, req *storev1.TablesRequest) (*storev1.TablesResponse, error) {
	sc, err := scope(ctx, &storev1.Scope{Database: req.GetDatabase()})
	if err != nil {
		return nil, err
	}
	tables, err := s.b.Tables(ctx, sc.Database)
	if err != nil {
		return nil, toStatus(err)
	}
	return &storev1.TablesResponse{Tables: tables}, nil
}
