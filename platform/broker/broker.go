// Package broker is the broker primitive: ephemeral publish/subscribe on
// core NATS, served as the Broker API on the mesh. Each namespace's topics
// are NATS subjects of their own (mesh.broker.<namespace>.<topic>), so
// namespaces never see each other's messages; a queue group maps to a
// NATS queue group, which hands each message to one member.
package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/platform/names"
	"github.com/micromesh/micromesh/platform/tenancy"
	brokerv1 "github.com/micromesh/micromesh/proto/broker/v1"
)

// Limits.
const (
	MaxTopicLen = 255
	MaxBody     = 1 << 20
)

// Header names carrying what NATS has no field for.
const (
	hdrPublisher = "Mesh-Publisher"
	hdrTime      = "Mesh-Time"
	hdrMeta      = "Mesh-Md-"
)

// Server serves the Broker API on a NATS connection.
type Server struct {
	brokerv1.UnimplementedBrokerServiceServer
	nc *nats.Conn
}

// NewServer serves on nc.
func NewServer(nc *nats.Conn) *Server { return &Server{nc: nc} }

func subject(ns, topic string) string { return "mesh.broker." + ns + "." + topic }

// Publish implements the Broker API.
func (s *Server) Publish(ctx context.Context, req *brokerv1.PublishRequest) (*brokerv1.PublishResponse, error) {
	id, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	if err := names.Topic(req.GetTopic(), MaxTopicLen); err != nil {
		return nil, err
	}
	if len(req.GetBody()) > MaxBody {
		return nil, status.Errorf(codes.InvalidArgument, "message of %d bytes (limit %d)", len(req.GetBody()), MaxBody)
	}
	if err := names.Metadata(req.GetMetadata()); err != nil {
		return nil, err
	}
	msg := nats.NewMsg(subject(ns, req.GetTopic()))
	msg.Data = req.GetBody()
	msg.Header.Set(hdrPublisher, id.String())
	msg.Header.Set(hdrTime, time.Now().UTC().Format(time.RFC3339Nano))
	for k, v := range req.GetMetadata() {
		msg.Header.Set(hdrMeta+k, v)
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		return nil, status.Errorf(codes.Unavailable, "broker: %v", err)
	}
	return &brokerv1.PublishResponse{}, nil
}

// Subscribe implements the Broker API.
func (s *Server) Subscribe(req *brokerv1.SubscribeRequest, stream grpc.ServerStreamingServer[brokerv1.SubscribeResponse]) error {
	ctx := stream.Context()
	_, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return err
	}
	if err := names.Topic(req.GetTopic(), MaxTopicLen); err != nil {
		return err
	}
	if q := req.GetQueue(); q != "" {
		if err := names.Name("queue", q); err != nil {
			return err
		}
	}
	ch := make(chan *nats.Msg, 512)
	var sub *nats.Subscription
	if q := req.GetQueue(); q != "" {
		sub, err = s.nc.ChanQueueSubscribe(subject(ns, req.GetTopic()), q, ch)
	} else {
		sub, err = s.nc.ChanSubscribe(subject(ns, req.GetTopic()), ch)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "broker: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// In place at the NATS server before the caller hears so.
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		return status.Errorf(codes.Unavailable, "broker: %v", err)
	}
	if err := stream.SendHeader(metadata.Pairs("subscribed", subject(ns, req.GetTopic()))); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			out := &brokerv1.SubscribeResponse{Topic: req.GetTopic(), Body: m.Data, Publisher: m.Header.Get(hdrPublisher)}
			if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(hdrTime)); err == nil {
				out.Time = timestamppb.New(t)
			}
			for k, vv := range m.Header {
				if name, ok := strings.CutPrefix(k, hdrMeta); ok && len(vv) > 0 {
					if out.Metadata == nil {
						out.Metadata = map[string]string{}
					}
					out.Metadata[name] = vv[0]
				}
			}
			if err := stream.Send(out); err != nil {
				return fmt.Errorf("broker: sending to the subscriber: %w", err)
			}
		}
	}
}
