// Package events is the events primitive: persistent, ordered streams on
// JetStream, served as the Events API on the mesh. Each topic of a
// namespace is a JetStream stream of its own (so sequence numbers count
// that topic's events: 1, 2, 3 …), holding events for the retention period;
// a consumer group is a durable consumer of it. Redelivery after the ack
// wait and after a nack is JetStream's; the retry limit is ours: an event
// delivered more often than it allows is published to "<topic>.dead" and
// terminated.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/platform/names"
	"github.com/micromesh/micromesh/platform/tenancy"
	eventsv1 "github.com/micromesh/micromesh/proto/events/v1"
)

// Limits and defaults.
const (
	MaxTopicLen       = 200
	MaxPayload        = 1 << 20
	DefaultRetryLimit = 3
	DefaultAckWait    = 30 * time.Second
	MinAckWait        = 100 * time.Millisecond
	DefaultReadLimit  = 100
	MaxReadLimit      = 1000
	// DeadSuffix names a topic's dead-letter topic.
	DeadSuffix = ".dead"
)

const (
	hdrPublisher = "Mesh-Publisher"
	hdrMeta      = "Mesh-Md-"
)

// Server serves the Events API on JetStream.
type Server struct {
	eventsv1.UnimplementedEventsServiceServer
	js        jetstream.JetStream
	retention time.Duration
	streams   sync.Map // stream name → true, once created
}

// NewServer serves on nc's JetStream, keeping events for retention
// (default 24 h).
func NewServer(nc *nats.Conn, retention time.Duration) (*Server, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if retention <= 0 {
		retention = 24 * time.Hour
	}
	return &Server{js: js, retention: retention}, nil
}

func subject(ns, topic string) string { return "mesh.events." + ns + "." + topic }

// streamName is the topic's stream: names cannot hold '.', so a hash of
// the topic keeps them apart.
func streamName(ns, topic string) string {
	h := sha256.Sum256([]byte(topic))
	return "EV_" + ns + "_" + hex.EncodeToString(h[:8])
}

// ensure makes the topic's stream exist: created on first use, then
// remembered, so a publish costs no lookup.
func (s *Server) ensure(ctx context.Context, ns, topic string) error {
	name := streamName(ns, topic)
	if _, ok := s.streams.Load(name); ok {
		return nil
	}
	_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Description: ns + "/" + topic, Subjects: []string{subject(ns, topic)},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, MaxAge: s.retention,
	})
	if err == nil {
		s.streams.Store(name, true)
	}
	return err
}

func unavailable(err error) error {
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Errorf(codes.Unavailable, "events: %v", err)
}

// Publish implements the Events API.
func (s *Server) Publish(ctx context.Context, req *eventsv1.PublishRequest) (*eventsv1.PublishResponse, error) {
	id, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	if err := names.Topic(req.GetTopic(), MaxTopicLen+len(DeadSuffix)); err != nil {
		return nil, err
	}
	if len(req.GetPayload()) > MaxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "payload of %d bytes (limit %d)", len(req.GetPayload()), MaxPayload)
	}
	if err := names.Metadata(req.GetMetadata()); err != nil {
		return nil, err
	}
	seq, err := s.publish(ctx, ns, req.GetTopic(), req.GetPayload(), req.GetMetadata(), id.String())
	if err != nil {
		return nil, unavailable(err)
	}
	return &eventsv1.PublishResponse{Sequence: seq}, nil
}

func (s *Server) publish(ctx context.Context, ns, topic string, payload []byte, md map[string]string, publisher string) (uint64, error) {
	if err := s.ensure(ctx, ns, topic); err != nil {
		return 0, err
	}
	msg := nats.NewMsg(subject(ns, topic))
	msg.Data = payload
	msg.Header.Set(hdrPublisher, publisher)
	for k, v := range md {
		msg.Header.Set(hdrMeta+k, v)
	}
	ack, err := s.js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// The stream went away behind our back (deleted by an operator):
		// make it again, once.
		s.streams.Delete(streamName(ns, topic))
		if err := s.ensure(ctx, ns, topic); err != nil {
			return 0, err
		}
		ack, err = s.js.PublishMsg(ctx, msg)
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// toEvent converts a stored message.
func toEvent(topic string, seq uint64, t time.Time, data []byte, h nats.Header, deliveries uint64) *eventsv1.Event {
	e := &eventsv1.Event{Topic: topic, Sequence: seq, Time: timestamppb.New(t), Payload: data,
		Publisher: h.Get(hdrPublisher), Deliveries: uint32(deliveries)}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, hdrMeta); ok && len(vv) > 0 {
			if e.Metadata == nil {
				e.Metadata = map[string]string{}
			}
			e.Metadata[name] = vv[0]
		}
	}
	return e
}

// Read implements the Events API.
func (s *Server) Read(ctx context.Context, req *eventsv1.ReadRequest) (*eventsv1.ReadResponse, error) {
	_, ns, err := tenancy.Namespace(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	if err := names.Topic(req.GetTopic(), MaxTopicLen+len(DeadSuffix)); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = DefaultReadLimit
	case limit > MaxReadLimit:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: at most %d", limit, MaxReadLimit)
	}
	offset := max(req.GetOffset(), 1)
	st, err := s.js.Stream(ctx, streamName(ns, req.GetTopic()))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if offset > 1 {
			return nil, status.Errorf(codes.OutOfRange, "offset %d is beyond topic %s, which has no events", offset, req.GetTopic())
		}
		return &eventsv1.ReadResponse{}, nil
	}
	if err != nil {
		return nil, unavailable(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	if last := info.State.LastSeq; offset > last+1 {
		return nil, status.Errorf(codes.OutOfRange, "offset %d is beyond topic %s, whose last event is %d", offset, req.GetTopic(), last)
	}
	resp := &eventsv1.ReadResponse{}
	for seq := max(offset, info.State.FirstSeq); seq <= info.State.LastSeq && len(resp.Events) < limit; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, unavailable(err)
		}
		resp.Events = append(resp.Events, toEvent(req.GetTopic(), m.Sequence, m.Time, m.Data, m.Header, 0))
	}
	return resp, nil
}

// Consume implements the Events API.
func (s *Server) Consume(stream grpc.BidiStreamingServer[eventsv1.ConsumeRequest, eventsv1.ConsumeResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sub := first.GetSubscribe()
	if sub == nil {
		return status.Error(codes.InvalidArgument, "the first request must subscribe")
	}
	_, ns, err := tenancy.Namespace(ctx, sub.GetNamespace())
	if err != nil {
		return err
	}
	topic := sub.GetTopic()
	if err := names.Topic(topic, MaxTopicLen+len(DeadSuffix)); err != nil {
		return err
	}
	if g := sub.GetGroup(); g != "" {
		if err := names.Name("group", g); err != nil {
			return err
		}
	}
	retryLimit := uint64(DefaultRetryLimit)
	if sub.RetryLimit != nil {
		retryLimit = uint64(sub.GetRetryLimit())
	}
	ackWait := DefaultAckWait
	if sub.GetAckWait() != nil {
		ackWait = sub.GetAckWait().AsDuration()
		if ackWait < MinAckWait {
			return status.Errorf(codes.InvalidArgument, "ack wait %v: at least %v", ackWait, MinAckWait)
		}
	}
	if err := s.ensure(ctx, ns, topic); err != nil {
		return unavailable(err)
	}
	st, err := s.js.Stream(ctx, streamName(ns, topic))
	if err != nil {
		return unavailable(err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable: sub.GetGroup(), AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1,
		FilterSubject: subject(ns, topic), InactiveThreshold: time.Hour,
	}
	if sub.GetGroup() == "" {
		cfg.InactiveThreshold = 10 * time.Second
	}
	switch {
	case sub.GetOffset() > 0 && sub.GetSince() != nil:
		return status.Error(codes.InvalidArgument, "an offset or a time, not both")
	case sub.GetOffset() > 0:
		info, err := st.Info(ctx)
		if err != nil {
			return unavailable(err)
		}
		if last := info.State.LastSeq; sub.GetOffset() > last+1 {
			return status.Errorf(codes.OutOfRange, "offset %d is beyond topic %s, whose last event is %d", sub.GetOffset(), topic, last)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, sub.GetOffset()
	case sub.GetSince() != nil:
		t := sub.GetSince().AsTime()
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	var cons jetstream.Consumer
	if g := sub.GetGroup(); g != "" {
		cons, err = st.Consumer(ctx, g)
		switch {
		case err == nil && (sub.GetOffset() > 0 || sub.GetSince() != nil):
			return status.Errorf(codes.FailedPrecondition, "group %s already has a position on %s; consume from an offset with a new group", g, topic)
		case err == nil:
			// A member joining: the group's position stands; ack wait as asked.
			info := cons.CachedInfo()
			c := info.Config
			c.AckWait = ackWait
			cons, err = st.UpdateConsumer(ctx, c)
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			cons, err = st.CreateConsumer(ctx, cfg)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				cons, err = st.Consumer(ctx, g)
			}
		}
	} else {
		cons, err = st.CreateConsumer(ctx, cfg)
	}
	if err != nil {
		return unavailable(err)
	}
	if sub.GetGroup() == "" {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
		}()
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return unavailable(err)
	}
	defer iter.Stop()
	if err := stream.SendHeader(metadata.Pairs("subscribed", subject(ns, topic))); err != nil {
		return err
	}

	// Acks come on the stream; messages wait for them here.
	var mu sync.Mutex
	pending := map[uint64]jetstream.Msg{}
	acks := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err == io.EOF {
				acks <- nil
				return
			}
			if err != nil {
				acks <- err
				return
			}
			var seq uint64
			switch k := req.GetKind().(type) {
			case *eventsv1.ConsumeRequest_Ack:
				seq = k.Ack.GetSequence()
			case *eventsv1.ConsumeRequest_Nack:
				seq = k.Nack.GetSequence()
			default:
				acks <- status.Error(codes.InvalidArgument, "subscribe only once; then ack or nack")
				return
			}
			mu.Lock()
			m, ok := pending[seq]
			delete(pending, seq)
			mu.Unlock()
			if !ok {
				continue // acked already, or redelivered to another member
			}
			if n := req.GetNack(); n != nil {
				_ = m.NakWithDelay(n.GetDelay().AsDuration())
			} else {
				// Confirmed by JetStream before the next request is read: once
				// the client's stream ends, its acks are in.
				_ = m.DoubleAck(ctx)
			}
		}
	}()
	msgs := make(chan jetstream.Msg)
	go func() {
		defer close(msgs)
		for {
			m, err := iter.Next(jetstream.NextContext(ctx))
			if err != nil {
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-acks:
			return err
		case m, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return status.Error(codes.Unavailable, "events: the subscription ended")
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.NumDelivered > retryLimit+1 {
				s.deadLetter(ctx, ns, topic, m, md)
				continue
			}
			ev := toEvent(topic, md.Sequence.Stream, md.Timestamp, m.Data(), m.Headers(), md.NumDelivered)
			if !sub.GetAutoAck() {
				mu.Lock()
				pending[md.Sequence.Stream] = m
				mu.Unlock()
			}
			if err := stream.Send(&eventsv1.ConsumeResponse{Event: ev}); err != nil {
				return err
			}
			if sub.GetAutoAck() {
				_ = m.Ack()
			}
		}
	}
}

// deadLetter moves an event that exhausted its retries to the topic's
// dead-letter topic, then stops its redelivery.
func (s *Server) deadLetter(ctx context.Context, ns, topic string, m jetstream.Msg, md *jetstream.MsgMetadata) {
	if strings.HasSuffix(topic, DeadSuffix) {
		_ = m.Term() // a dead letter that fails again stays where it is
		return
	}
	meta := map[string]string{}
	for k, vv := range m.Headers() {
		if name, ok := strings.CutPrefix(k, hdrMeta); ok && len(vv) > 0 {
			meta[name] = vv[0]
		}
	}
	meta["dead_topic"] = topic
	meta["dead_sequence"] = strconv.FormatUint(md.Sequence.Stream, 10)
	meta["dead_deliveries"] = strconv.FormatUint(md.NumDelivered-1, 10)
	meta["dead_consumer"] = md.Consumer
	if _, err := s.publish(ctx, ns, topic+DeadSuffix, m.Data(), meta, m.Headers().Get(hdrPublisher)); err != nil {
		_ = m.Nak() // try again with the next delivery
		return
	}
	_ = m.Term()
}
