package h3

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
)

// max1xx bounds the informational responses read before the final one.
const max1xx = 5

var decoder = qpack.NewDecoder()

// readResponse reads frames up to the final response's HEADERS. The
// returned reader is positioned at the body.
func readResponse(str *quic.Stream, req *http.Request) (*http.Response, *bufio.Reader, error) {
	br := newReader(str)
	fail := func(err error) (*http.Response, *bufio.Reader, error) {
		putReader(br)
		return nil, nil, err
	}
	num1xx := 0
	for {
		typ, n, err := readFrameHeader(br)
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%w: the stream ended before the response headers", errMalformed)
			}
			return fail(streamErr("reading the response", err))
		}
		switch typ {
		case frameHeaders:
		case frameData:
			return fail(fmt.Errorf("%w: DATA before HEADERS", errMalformed))
		case frameSettings, frameGoAway, 0x3, 0x5, 0xd: // control frames, CANCEL_PUSH, PUSH_PROMISE, MAX_PUSH_ID
			return fail(fmt.Errorf("%w: frame type %#x on a request stream", errMalformed, typ))
		default: // unknown and reserved frame types are ignored
			if err := skip(br, n); err != nil {
				return fail(streamErr("reading the response", err))
			}
			continue
		}
		block, err := readHeaderBlock(br, n)
		if err != nil {
			return fail(streamErr("reading the response", err))
		}
		resp, err := decodeResponse(block, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if num1xx++; num1xx > max1xx {
				return fail(fmt.Errorf("%w: more than %d informational responses", errMalformed, max1xx))
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(fmt.Errorf("%w: 101 Switching Protocols is not allowed in HTTP/3", errMalformed))
		}
		return resp, br, nil
	}
}

// decodeResponse turns a header block into a response (without body).
func decodeResponse(block []byte, req *http.Request) (*http.Response, error) {
	resp := &http.Response{
		Proto:         "HTTP/3.0",
		ProtoMajor:    3,
		Header:        http.Header{},
		ContentLength: -1,
		Request:       req,
	}
	status := ""
	h := headerSink{h: resp.Header}
	err := decodeFields(block, func(name, value string, pseudo bool) error {
		if pseudo {
			if name != ":status" || status != "" {
				return fmt.Errorf("%w: pseudo-header %q", errMalformed, name)
			}
			status = value
			return nil
		}
		h.add(name, value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	code, err := strconv.Atoi(status)
	if err != nil || len(status) != 3 || code < 100 {
		return nil, fmt.Errorf("%w: status %q", errMalformed, status)
	}
	resp.StatusCode = code
	resp.Status = status + " " + http.StatusText(code)
	if cl := resp.Header["Content-Length"]; len(cl) > 0 {
		n, err := contentLength(cl)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformed, err)
		}
		resp.ContentLength = n
	}
	if req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		resp.ContentLength = 0
	}
	return resp, nil
}

// commonKeys are the canonical forms of the header names most responses
// carry: HTTP/3 sends names in lower case, and canonicalizing them would
// allocate a string per field.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Access-Control-Allow-Origin", "Cache-Control", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Type", "Date", "Etag", "Expires", "Grpc-Encoding", "Grpc-Message", "Grpc-Status",
		"Last-Modified", "Location", "Server", "Set-Cookie", "Trailer", "Vary", "X-Content-Type-Options",
	} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

func canonicalKey(name string) string {
	if k, ok := commonKeys[name]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// decodeFields decodes a header block, checking the rules every field
// section follows: lower-case names, pseudo-headers first.
func decodeFields(block []byte, f func(name, value string, pseudo bool) error) error {
	next := decoder.Decode(block)
	regular := false
	for {
		hf, err := next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: QPACK: %w", errMalformed, err)
		}
		pseudo := strings.HasPrefix(hf.Name, ":")
		switch {
		case pseudo && regular:
			return fmt.Errorf("%w: pseudo-header %q after regular fields", errMalformed, hf.Name)
		case !pseudo:
			regular = true
			if hf.Name != strings.ToLower(hf.Name) || hf.Name == "" {
				return fmt.Errorf("%w: header name %q is not lower-case", errMalformed, hf.Name)
			}
		}
		if err := f(hf.Name, hf.Value, pseudo); err != nil {
			return err
		}
	}
}

// body is a message body read from the stream's DATA frames; trailers
// land in *trailer when it ends.
type body struct {
	str           *quic.Stream
	br            *bufio.Reader
	trailer       *http.Header
	of            string      // "response" (the client's) or "request" (the server's)
	stop          func() bool // nil: none
	done          func()      // the exchange is over (once); nil: none
	contentLength int64

	mu        sync.Mutex  // Read against Close
	ended     atomic.Bool // the stream ended whole
	remaining uint64      // bytes left in the current DATA frame
	read      int64
	err       error // sticky: the end, or what broke it
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	for b.remaining == 0 {
		typ, n, err := readFrameHeader(b.br)
		if err == io.EOF {
			if b.contentLength >= 0 && b.read != b.contentLength {
				return 0, b.end(fmt.Errorf("%w: body of %d bytes, content-length %d", errMalformed, b.read, b.contentLength))
			}
			return 0, b.end(io.EOF)
		}
		if err != nil {
			return 0, b.end(streamErr("reading the "+b.of+" body", err))
		}
		switch typ {
		case frameData:
			b.remaining = n
		case frameHeaders:
			if err := b.trailers(n); err != nil {
				return 0, b.end(err)
			}
			return 0, io.EOF
		case frameSettings, frameGoAway, 0x3, 0x5, 0xd:
			return 0, b.end(fmt.Errorf("%w: frame type %#x on a request stream", errMalformed, typ))
		default:
			if err := skip(b.br, n); err != nil {
				return 0, b.end(streamErr("reading the "+b.of+" body", err))
			}
		}
	}
	if uint64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= uint64(n)
	b.read += int64(n)
	if b.contentLength >= 0 && b.read > b.contentLength {
		return n, b.end(fmt.Errorf("%w: body longer than content-length %d", errMalformed, b.contentLength))
	}
	if err == io.EOF && b.remaining == 0 {
		// The stream ended with this frame: a read may return the last
		// bytes and EOF together. The next Read finds the end.
		err = nil
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // mid-frame
		}
		return n, b.end(streamErr("reading the "+b.of+" body", err))
	}
	return n, nil
}

// trailers reads the trailing HEADERS frame; the stream must end after it.
func (b *body) trailers(n uint64) error {
	block, err := readHeaderBlock(b.br, n)
	if err != nil {
		return streamErr("reading the trailers", err)
	}
	t := http.Header{}
	err = decodeFields(block, func(name, value string, pseudo bool) error {
		if pseudo {
			return fmt.Errorf("%w: pseudo-header %q in trailers", errMalformed, name)
		}
		k := canonicalKey(name)
		t[k] = append(t[k], value)
		return nil
	})
	if err != nil {
		return err
	}
	if _, _, err := readFrameHeader(b.br); err != io.EOF {
		return fmt.Errorf("%w: frames after the trailers", errMalformed)
	}
	*b.trailer = t
	if b.contentLength >= 0 && b.read != b.contentLength {
		return fmt.Errorf("%w: body of %d bytes, content-length %d", errMalformed, b.read, b.contentLength)
	}
	b.end(io.EOF)
	return nil
}

// end records how the body ended and lets go of the stream. A broken
// response ends the exchange; a broken request body only its reading (the
// handler may still answer: a server's early answer while the client
// still sends is ordinary in gRPC).
func (b *body) end(err error) error {
	b.err = err
	switch {
	case err == io.EOF:
		b.ended.Store(true)
	case b.of == "request":
		b.str.CancelRead(quic.StreamErrorCode(errRequestCancelled))
	default:
		b.str.CancelRead(quic.StreamErrorCode(errRequestCancelled))
		b.str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
	}
	b.release()
	return err
}

func (b *body) release() {
	if b.br != nil {
		putReader(b.br)
		b.br = nil
		if b.stop != nil {
			b.stop()
		}
		if b.done != nil {
			b.done()
		}
	}
}

// Close abandons the rest of the body: a response's stream is cancelled
// both ways unless it already ended; a request's is only asked to stop
// sending (H3_NO_ERROR), as the response may still be on its way
// (RFC 9114 §4.1). quic-go sends nothing once the stream's end was read.
func (b *body) Close() error {
	if !b.ended.Load() {
		// Unblocks a Read in another goroutine.
		if b.of == "request" {
			b.str.CancelRead(quic.StreamErrorCode(errNoError))
		} else {
			b.str.CancelRead(quic.StreamErrorCode(errRequestCancelled))
			b.str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = errors.New("h3: read on closed " + b.of + " body")
		b.release()
	}
	return nil
}

// streamErr words a stream failure for whoever reads it.
func streamErr(what string, err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return fmt.Errorf("h3: %s: the peer reset the stream (%s): %w", what, codeName(uint64(se.ErrorCode)), err)
	}
	return fmt.Errorf("h3: %s: %w", what, err)
}

func codeName(c uint64) string {
	switch c {
	case errNoError:
		return "H3_NO_ERROR"
	case errInternal:
		return "H3_INTERNAL_ERROR"
	case errRequestCancelled:
		return "H3_REQUEST_CANCELLED"
	case errRequestRejected:
		return "H3_REQUEST_REJECTED"
	case errRequestIncomplete:
		return "H3_REQUEST_INCOMPLETE"
	case errMessageError:
		return "H3_MESSAGE_ERROR"
	default:
		return fmt.Sprintf("%#x", c)
	}
}
