// Package h3 is HTTP/3 (RFC 9114) between sidecars, over quic-go's QUIC:
// the client a sidecar calls other sidecars with (Transport) and the
// server its inbound QUIC listener answers with (Server).
//
// One goroutine runs each exchange. The client's caller writes the request
// and reads the response: quic-go's own http3 client starts two goroutines
// per request (a cancellation watcher and a body sender) and wraps each
// stream in state tracking that starts a third when it ends, and on a
// small VM every wake-up costs more than the work it hands over. The
// server's goroutine per request stream reads the request, runs the
// handler and writes the response through a buffer, so a small answer is
// one write with its headers and the stream's end; a request carries the
// connection's TLS state by pointer and the stream's context, with no
// copies per request (quic-go's server allocates about a quarter more per
// request through both sidecars).
//
// It speaks what a mesh peer needs: requests and responses with bodies and
// trailers, streaming both ways, cancellation, GOAWAY and graceful
// shutdown. QPACK is used without a dynamic table (static table and
// literals), as quic-go does. No server push, no extended CONNECT, no
// datagrams.
package h3

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/quic-go/quic-go/quicvarint"
)

// Frame and stream types (RFC 9114 §7.2, §6.2).
const (
	frameData     = 0x0
	frameHeaders  = 0x1
	frameSettings = 0x4
	frameGoAway   = 0x7

	streamControl = 0x0
	streamPush    = 0x1
	streamEncoder = 0x2
	streamDecoder = 0x3
)

// Error codes (RFC 9114 §8.1).
const (
	errNoError           = 0x100
	errGeneralProtocol   = 0x101
	errInternal          = 0x102
	errStreamCreation    = 0x103
	errClosedCritical    = 0x104
	errFrameUnexpected   = 0x105
	errFrameError        = 0x106
	errIDError           = 0x108
	errMissingSettings   = 0x10a
	errRequestRejected   = 0x10b
	errRequestCancelled  = 0x10c
	errRequestIncomplete = 0x10d
	errMessageError      = 0x10e
)

// maxHeaderSectionSize bounds a HEADERS frame this client accepts.
const maxHeaderSectionSize = 256 << 10

var errFrameTooLarge = errors.New("h3: HEADERS frame too large")

// connectionSpecific reports whether a (lower-case) field name is one
// HTTP/3 forbids: connection-specific fields belong to HTTP/1.1
// (RFC 9114 §4.2).
func connectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// contentLength parses a message's content-length values: one number,
// repeated at most with the same value.
func contentLength(cl []string) (int64, error) {
	n, err := strconv.ParseInt(cl[0], 10, 64)
	for _, v := range cl[1:] {
		if v != cl[0] {
			err = errors.New("differing values")
		}
	}
	if err != nil || n < 0 {
		return 0, fmt.Errorf("content-length %q", cl)
	}
	return n, nil
}

// appendFrameHeader appends a frame's type and length.
func appendFrameHeader(b []byte, typ, length uint64) []byte {
	b = quicvarint.Append(b, typ)
	return quicvarint.Append(b, length)
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// newReader returns a pooled buffered reader on r; give it back with
// putReader.
func newReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// readFrameHeader reads a frame's type and length.
func readFrameHeader(r *bufio.Reader) (typ, length uint64, err error) {
	typ, err = quicvarint.Read(r)
	if err != nil {
		return 0, 0, err
	}
	length, err = quicvarint.Read(r)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return typ, length, err
}

// skip discards n bytes of r (a frame this client ignores).
func skip(r *bufio.Reader, n uint64) error {
	_, err := r.Discard(int(min(n, 1<<30)))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readHeaderBlock reads the payload of a HEADERS frame.
func readHeaderBlock(r *bufio.Reader, n uint64) ([]byte, error) {
	if n > maxHeaderSectionSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", errFrameTooLarge, n, maxHeaderSectionSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}
