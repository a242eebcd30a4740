package h3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"golang.org/x/net/http/httpguts"
)

// maxInlineBody is the largest in-memory request body (one with GetBody)
// sent in the same write as its headers, by the caller's goroutine.
const maxInlineBody = 64 << 10

// roundTrip runs one exchange on a new stream of cc; w holds the encoded
// request headers and is kept as it is for a retry on another connection.
func (cc *clientConn) roundTrip(req *http.Request, w *writeBuf, hasBody bool) (*http.Response, error) {
	ctx := req.Context()
	closeBody := func() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
	}
	if !cc.begin() {
		return nil, errConnGone // the body is untouched: the retry sends it
	}
	str, err := cc.qc.OpenStreamSync(ctx)
	if err != nil {
		cc.end()
		if ctx.Err() != nil {
			closeBody()
			return nil, ctx.Err()
		}
		if cc.qc.Context().Err() != nil {
			return nil, fmt.Errorf("%w: %w", errConnGone, err)
		}
		closeBody()
		return nil, fmt.Errorf("h3: opening a stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		str.CancelRead(quic.StreamErrorCode(errRequestCancelled))
		str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
	})
	fail := func(err error) (*http.Response, error) {
		stop()
		cc.end()
		str.CancelRead(quic.StreamErrorCode(errRequestCancelled))
		str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, err
	}
	inline := !hasBody || (req.GetBody != nil && req.ContentLength > 0 && req.ContentLength <= maxInlineBody)
	if inline {
		b := w.b
		if hasBody {
			b, err = appendBody(b, req)
			if err != nil {
				return fail(err)
			}
			w.b = b[:len(w.b)] // keep the grown buffer for the pool
		}
		if _, err := str.Write(b); err != nil {
			return fail(fmt.Errorf("h3: sending the request: %w", err))
		}
		_ = str.Close()
	} else {
		if _, err := str.Write(w.b); err != nil {
			closeBody()
			return fail(fmt.Errorf("h3: sending the request: %w", err))
		}
		go sendBody(str, req)
	}
	resp, br, err := readResponse(str, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &body{str: str, br: br, trailer: &resp.Trailer, of: "response", stop: stop, done: cc.end, contentLength: resp.ContentLength}
	return resp, nil
}

type writeBuf struct{ b []byte }

var writeBufs = sync.Pool{New: func() any { return &writeBuf{b: make([]byte, 0, 4<<10)} }}

// appendBody appends req's whole in-memory body as one DATA frame, then
// its trailers, and closes the body.
func appendBody(b []byte, req *http.Request) ([]byte, error) {
	defer req.Body.Close()
	n := int(req.ContentLength)
	b = appendFrameHeader(b, frameData, uint64(n))
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(req.Body, b[len(b)-n:]); err != nil {
		return nil, fmt.Errorf("h3: reading the request body: %w", err)
	}
	return appendTrailers(b, req.Trailer)
}

// tunnelChunk is the most a CONNECT stream's DATA frame carries.
const tunnelChunk = 32 << 10

// sendBody streams req's body in DATA frames, then its trailers, and
// closes the stream; a failure resets the stream so the peer does not take
// a cut body for a whole one.
func sendBody(str *quic.Stream, req *http.Request) {
	defer req.Body.Close()
	w := writeBufs.Get().(*writeBuf)
	defer writeBufs.Put(w)
	buf := w.b[:cap(w.b)]
	if req.Method == http.MethodConnect {
		// A tunnel's bytes: reads of a TCP connection, as large as they
		// come (a 4 KiB frame each would cost a stream write per 4 KiB).
		buf = make([]byte, tunnelChunk)
	}
	const room = 16 // frame header
	var sent int64
	for {
		n, err := req.Body.Read(buf[room:])
		if n > 0 {
			sent += int64(n)
			if req.ContentLength > 0 && sent > req.ContentLength {
				str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
				return
			}
			hdr := appendFrameHeader(buf[:0:room], frameData, uint64(n))
			start := room - len(hdr)
			copy(buf[start:], hdr)
			if _, werr := str.Write(buf[start : room+n]); werr != nil {
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
			return
		}
	}
	if req.ContentLength > 0 && sent != req.ContentLength {
		str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
		return
	}
	if len(req.Trailer) > 0 {
		t, err := appendTrailers(nil, req.Trailer)
		if err != nil {
			str.CancelWrite(quic.StreamErrorCode(errRequestCancelled))
			return
		}
		if _, err := str.Write(t); err != nil {
			return
		}
	}
	_ = str.Close()
}

// appendRequestHeaders appends the HEADERS frame of req.
func appendRequestHeaders(b []byte, req *http.Request, hasBody bool) ([]byte, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return nil, fmt.Errorf("h3: invalid host %q", host)
	}
	e := getEncoder()
	defer putEncoder(e)
	e.field(":method", req.Method)
	if req.Method == http.MethodConnect {
		// A tunnel to host: no scheme, no path (RFC 9114 §4.4).
		e.field(":authority", host)
	} else {
		e.field(":scheme", "https")
		e.field(":authority", host)
		e.field(":path", req.URL.RequestURI())
	}
	for k, vv := range req.Header {
		name := lowerName(k)
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("h3: invalid header name %q", k)
		}
		if connectionSpecific(name) {
			continue
		}
		switch name {
		case "host", "content-length":
			continue
		case "te":
			// Only "trailers" may be sent (RFC 9114 §4.2).
			if !slicesHas(vv, "trailers") {
				continue
			}
			vv = []string{"trailers"}
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("h3: invalid value for header %q", k)
			}
			e.field(name, v)
		}
	}
	switch {
	case hasBody && req.ContentLength > 0:
		e.field("content-length", strconv.FormatInt(req.ContentLength, 10))
	case !hasBody && (req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch):
		e.field("content-length", "0")
	}
	if e.err != nil {
		return nil, e.err
	}
	b = appendFrameHeader(b, frameHeaders, uint64(len(e.w.b)))
	return append(b, e.w.b...), nil
}

// appendTrailers appends a HEADERS frame of trailer fields, or nothing if
// there are none.
func appendTrailers(b []byte, trailer http.Header) ([]byte, error) {
	if len(trailer) == 0 {
		return b, nil
	}
	e := getEncoder()
	defer putEncoder(e)
	for k, vv := range trailer {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("h3: invalid trailer name %q", k)
		}
		name := lowerName(k)
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("h3: invalid value for trailer %q", k)
			}
			e.field(name, v)
		}
	}
	if e.err != nil {
		return nil, e.err
	}
	b = appendFrameHeader(b, frameHeaders, uint64(len(e.w.b)))
	return append(b, e.w.b...), nil
}

func slicesHas(vv []string, want string) bool {
	for _, v := range vv {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), want) {
				return true
			}
		}
	}
	return false
}

// encoder is a QPACK encoder writing into a reusable buffer.
type encoder struct {
	w   appendWriter
	enc *qpack.Encoder
	err error
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = qpack.NewEncoder(&e.w)
	return e
}}

func getEncoder() *encoder {
	e := encoders.Get().(*encoder)
	e.w.b = e.w.b[:0]
	e.err = nil
	return e
}

func putEncoder(e *encoder) {
	_ = e.enc.Close() // resets it for the next header block
	if cap(e.w.b) <= 64<<10 {
		encoders.Put(e)
	}
}

func (e *encoder) field(name, value string) {
	if e.err == nil {
		e.err = e.enc.WriteField(qpack.HeaderField{Name: name, Value: value})
	}
}

// lowerNames holds the lower-case form of common canonical header names,
// so that sending them allocates nothing.
var lowerNames = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control", "Content-Encoding",
		"Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Grpc-Accept-Encoding", "Grpc-Encoding",
		"Grpc-Message", "Grpc-Status", "Grpc-Timeout", "If-Modified-Since", "If-None-Match", "Last-Modified",
		"Location", "Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "User-Agent", "Vary",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Mesh-Caller", "X-Request-Id", "Traceparent", "Tracestate",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerName(k string) string {
	if l, ok := lowerNames[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// errMalformed is a response that breaks HTTP/3's rules.
var errMalformed = errors.New("h3: malformed response")
