// Package broker is the framework's client of the broker primitive:
// ephemeral publish/subscribe within the service's namespace, through its
// sidecar to broker.micromesh.
//
//	err := broker.Publish(ctx, "orders.created", body)
//	sub, err := broker.Subscribe(ctx, "orders.created", broker.Queue("billing"))
//	for { msg, err := sub.Next(); ... }
package broker

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/micromesh/micromesh/proto/broker/v1"
	"github.com/micromesh/micromesh/service"
)

// ServiceName is the broker's name on the mesh.
const ServiceName = "broker.micromesh"

// Message is a received message.
type Message struct {
	Topic     string
	Body      []byte
	Metadata  map[string]string
	Publisher string // SPIFFE ID
	Time      time.Time
}

type options struct {
	queue, namespace string
	metadata         map[string]string
}

// Option changes one call.
type Option func(*options)

// Queue joins a queue group: each message goes to one of its members.
func Queue(q string) Option { return func(o *options) { o.queue = q } }

// Metadata travels with a published message.
func Metadata(md map[string]string) Option { return func(o *options) { o.metadata = md } }

// Namespace acts in another namespace (the platform's identities only).
func Namespace(ns string) Option { return func(o *options) { o.namespace = ns } }

func apply(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

// Client calls the broker over a connection to it.
type Client struct{ c brokerv1.BrokerServiceClient }

// NewClient uses conn (a connection to the broker through a sidecar).
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{c: brokerv1.NewBrokerServiceClient(conn)}
}

// Publish sends body to the topic's current subscribers.
func (c *Client) Publish(ctx context.Context, topic string, body []byte, opts ...Option) error {
	o := apply(opts)
	_, err := c.c.Publish(ctx, &brokerv1.PublishRequest{Topic: topic, Body: body, Metadata: o.metadata, Namespace: o.namespace})
	return err
}

// Subscription receives a topic's messages until its context ends.
type Subscription struct {
	stream grpc.ServerStreamingClient[brokerv1.SubscribeResponse]
}

// Subscribe subscribes to topic; it returns once the subscription is in
// place, so what is published after it returns is received.
func (c *Client) Subscribe(ctx context.Context, topic string, opts ...Option) (*Subscription, error) {
	o := apply(opts)
	stream, err := c.c.Subscribe(ctx, &brokerv1.SubscribeRequest{Topic: topic, Queue: o.queue, Namespace: o.namespace})
	if err != nil {
		return nil, err
	}
	md, err := stream.Header()
	if err != nil {
		return nil, err
	}
	if len(md.Get("subscribed")) == 0 {
		// A refusal comes as trailers only: its status is what Recv returns.
		if _, err := stream.Recv(); err != nil {
			return nil, err
		}
		return nil, errors.New("broker: the subscription was not confirmed")
	}
	return &Subscription{stream: stream}, nil
}

// Next waits for the next message; it fails once the subscription's
// context ends or the broker goes away.
func (s *Subscription) Next() (*Message, error) {
	m, err := s.stream.Recv()
	if err != nil {
		return nil, err
	}
	msg := &Message{Topic: m.GetTopic(), Body: m.GetBody(), Metadata: m.GetMetadata(), Publisher: m.GetPublisher()}
	if m.GetTime() != nil {
		msg.Time = m.GetTime().AsTime()
	}
	return msg, nil
}

var defaultClient = service.DialOnce(ServiceName, NewClient)

// Publish publishes through the service's sidecar; see Client.Publish.
func Publish(ctx context.Context, topic string, body []byte, opts ...Option) error {
	c, err := defaultClient()
	if err != nil {
		return err
	}
	return c.Publish(ctx, topic, body, opts...)
}

// Subscribe subscribes through the service's sidecar; see
// Client.Subscribe.
func Subscribe(ctx context.Context, topic string, opts ...Option) (*Subscription, error) {
	c, err := defaultClient()
	if err != nil {
		return nil, err
	}
	return c.Subscribe(ctx, topic, opts...)
}
