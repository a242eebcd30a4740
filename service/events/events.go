// Package events is the framework's client of the events primitive:
// persistent, ordered topics in the service's namespace, through its
// sidecar to events.micromesh.
//
//	seq, err := events.Publish(ctx, "orders", payload)
//	c, err := events.Consume(ctx, "orders", events.Group("billing"))
//	for { ev, err := c.Next(); ...; c.Ack(ev) }
//	evs, err := events.Read(ctx, "orders", events.Offset(1), events.Limit(10))
package events

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/micromesh/micromesh/proto/events/v1"
	"github.com/micromesh/micromesh/service"
)

// ServiceName is the events service's name on the mesh.
const ServiceName = "events.micromesh"

// Event is a stored event.
type Event struct {
	Topic      string
	Sequence   uint64
	Time       time.Time
	Payload    []byte
	Metadata   map[string]string
	Publisher  string
	Deliveries uint32 // to this consumer, this one included
}

type options struct {
	namespace  string
	metadata   map[string]string
	group      string
	offset     uint64
	since      time.Time
	autoAck    bool
	retryLimit *uint32
	ackWait    time.Duration
	limit      uint32
}

// Option changes one call.
type Option func(*options)

// Namespace acts in another namespace (the platform's identities only).
func Namespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// Metadata travels with a published event.
func Metadata(md map[string]string) Option { return func(o *options) { o.metadata = md } }

// Group consumes as a member of a durable group.
func Group(g string) Option { return func(o *options) { o.group = g } }

// Offset starts at a sequence number (1 is the first event).
func Offset(seq uint64) Option { return func(o *options) { o.offset = seq } }

// Since starts at the first event at or after t.
func Since(t time.Time) Option { return func(o *options) { o.since = t } }

// AutoAck acknowledges each event as it is delivered.
func AutoAck() Option { return func(o *options) { o.autoAck = true } }

// RetryLimit sets the deliveries after the first before an event goes to
// the dead-letter topic (default 3).
func RetryLimit(n uint32) Option { return func(o *options) { o.retryLimit = &n } }

// AckWait sets how long an unacknowledged event waits before it comes
// again (default 30 s).
func AckWait(d time.Duration) Option { return func(o *options) { o.ackWait = d } }

// Limit caps Read.
func Limit(n uint32) Option { return func(o *options) { o.limit = n } }

func apply(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

func fromProto(e *eventsv1.Event) *Event {
	ev := &Event{Topic: e.GetTopic(), Sequence: e.GetSequence(), Payload: e.GetPayload(), Metadata: e.GetMetadata(),
		Publisher: e.GetPublisher(), Deliveries: e.GetDeliveries()}
	if e.GetTime() != nil {
		ev.Time = e.GetTime().AsTime()
	}
	return ev
}

// Client calls the events service over a connection to it.
type Client struct{ c eventsv1.EventsServiceClient }

// NewClient uses conn (a connection to the events service through a
// sidecar).
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{c: eventsv1.NewEventsServiceClient(conn)}
}

// Publish appends an event and returns its sequence number; it is on disk
// when Publish returns.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, opts ...Option) (uint64, error) {
	o := apply(opts)
	resp, err := c.c.Publish(ctx, &eventsv1.PublishRequest{Topic: topic, Payload: payload, Metadata: o.metadata, Namespace: o.namespace})
	if err != nil {
		return 0, err
	}
	return resp.GetSequence(), nil
}

// Read returns events from Offset (default 1) on, at most Limit (default
// 100), without consuming them.
func (c *Client) Read(ctx context.Context, topic string, opts ...Option) ([]*Event, error) {
	o := apply(opts)
	resp, err := c.c.Read(ctx, &eventsv1.ReadRequest{Topic: topic, Offset: o.offset, Limit: o.limit, Namespace: o.namespace})
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(resp.GetEvents()))
	for _, e := range resp.GetEvents() {
		out = append(out, fromProto(e))
	}
	return out, nil
}

// Consumer receives a topic's events until its context ends.
type Consumer struct {
	stream grpc.BidiStreamingClient[eventsv1.ConsumeRequest, eventsv1.ConsumeResponse]
	mu     sync.Mutex // sends
}

// Consume subscribes; it returns once the subscription is in place.
func (c *Client) Consume(ctx context.Context, topic string, opts ...Option) (*Consumer, error) {
	o := apply(opts)
	stream, err := c.c.Consume(ctx)
	if err != nil {
		return nil, err
	}
	sub := &eventsv1.Subscribe{Topic: topic, Group: o.group, Offset: o.offset, AutoAck: o.autoAck, RetryLimit: o.retryLimit, Namespace: o.namespace}
	if !o.since.IsZero() {
		sub.Since = timestamppb.New(o.since)
	}
	if o.ackWait != 0 {
		sub.AckWait = durationpb.New(o.ackWait)
	}
	if err := stream.Send(&eventsv1.ConsumeRequest{Kind: &eventsv1.ConsumeRequest_Subscribe{Subscribe: sub}}); err != nil {
		_, rerr := stream.Recv()
		return nil, errors.Join(err, rerr)
	}
	md, err := stream.Header()
	if err != nil {
		return nil, err
	}
	if len(md.Get("subscribed")) == 0 {
		if _, err := stream.Recv(); err != nil {
			return nil, err // the refusal
		}
		return nil, errors.New("events: the subscription was not confirmed")
	}
	return &Consumer{stream: stream}, nil
}

// Next waits for the next event.
func (c *Consumer) Next() (*Event, error) {
	resp, err := c.stream.Recv()
	if err != nil {
		return nil, err
	}
	return fromProto(resp.GetEvent()), nil
}

// Ack acknowledges an event: it will not come again.
func (c *Consumer) Ack(ev *Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream.Send(&eventsv1.ConsumeRequest{Kind: &eventsv1.ConsumeRequest_Ack{Ack: &eventsv1.Ack{Sequence: ev.Sequence}}})
}

// Nack asks for the event again after delay (it counts as a retry).
func (c *Consumer) Nack(ev *Event, delay time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream.Send(&eventsv1.ConsumeRequest{Kind: &eventsv1.ConsumeRequest_Nack{Nack: &eventsv1.Nack{Sequence: ev.Sequence, Delay: durationpb.New(delay)}}})
}

// Close ends the subscription and returns once the service has applied
// every ack sent before it (events not acknowledged come again). Events
// that arrive while it closes are dropped here: with AutoAck they count as
// delivered, so use manual acks where every event matters.
func (c *Consumer) Close() error {
	c.mu.Lock()
	err := c.stream.CloseSend()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		if _, err := c.stream.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

var defaultClient = service.DialOnce(ServiceName, NewClient)

// Publish publishes through the service's sidecar; see Client.Publish.
func Publish(ctx context.Context, topic string, payload []byte, opts ...Option) (uint64, error) {
	c, err := defaultClient()
	if err != nil {
		return 0, err
	}
	return c.Publish(ctx, topic, payload, opts...)
}

// Consume consumes through the service's sidecar; see Client.Consume.
func Consume(ctx context.Context, topic string, opts ...Option) (*Consumer, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Consume(ctx, topic, opts...)
}

// Read reads through the service's sidecar; see Client.Read.
func Read(ctx context.Context, topic string, opts ...Option) ([]*Event, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Read(ctx, topic, opts...)
}
