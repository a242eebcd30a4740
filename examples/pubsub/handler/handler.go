// Package handler is pubsub's endpoints and its consumer.
package handler

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "github.com/micromesh/micromesh/examples/pubsub/proto"
	merrors "github.com/micromesh/micromesh/service/errors"
	"github.com/micromesh/micromesh/service/events"
)

// Topic is where pubsub publishes.
const Topic = "greetings"

// Pubsub publishes to Topic and remembers what its consumer received.
type Pubsub struct {
	pb.UnimplementedPubsubServer
	Events *events.Client

	mu       sync.Mutex
	received []string
}

// Publish appends a message.
func (h *Pubsub) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	if req.GetMessage() == "" {
		return nil, merrors.BadRequest("pubsub.publish", "message is required")
	}
	seq, err := h.Events.Publish(ctx, Topic, []byte(req.GetMessage()))
	if err != nil {
		return nil, err
	}
	return &pb.PublishResponse{Sequence: seq}, nil
}

// Received lists what the consumer received.
func (h *Pubsub) Received(ctx context.Context, _ *pb.ReceivedRequest) (*pb.ReceivedResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return &pb.ReceivedResponse{Messages: append([]string(nil), h.received...)}, nil
}

// Consume receives Topic's events as group "pubsub", acknowledging each,
// until ctx ends; it subscribes again if the stream breaks.
func (h *Pubsub) Consume(ctx context.Context, log *slog.Logger) {
	for ctx.Err() == nil {
		c, err := h.Events.Consume(ctx, Topic, events.Group("pubsub"))
		if err != nil {
			log.Warn("subscribing; trying again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for {
			ev, err := c.Next()
			if err != nil {
				break
			}
			h.mu.Lock()
			h.received = append(h.received, string(ev.Payload))
			h.mu.Unlock()
			log.Info("received", "sequence", ev.Sequence, "message", string(ev.Payload))
			_ = c.Ack(ev)
		}
	}
}
