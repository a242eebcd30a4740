package h3

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/http/httpguts"
)

// flushAt is how many bytes of frames the response writer holds before it
// hands them to the stream: a small answer (headers, body, trailers) leaves
// in one write, with the end of the stream.
const flushAt = 4 << 10

// statusCodes holds the :status values, so that writing one allocates
// nothing.
var statusCodes = func() (s [600]string) {
	for i := 100; i < len(s); i++ {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

var errWriteAfterReturn = errors.New("h3: response written after the handler returned")

// responseWriter writes a response to its request stream: HEADERS, DATA
// frames and trailers, buffered until Flush, flushAt bytes or the
// handler's return.
type responseWriter struct {
	str         *quic.Stream
	head        bool // a HEAD request: the body is not sent
	header      http.Header
	buf         *writeBuf // frames not yet written to the stream; nil before the first
	status      int       // the final status, 0 until written
	bodyAllowed bool
	declared    int64    // content-length the handler set; -1: none
	written     int64    // body bytes written
	trailers    []string // names the Trailer header declared
	done        bool     // the handler returned
	err         error    // the stream failed: every later write fails with it
}

func (w *responseWriter) init(str *quic.Stream, req *http.Request) {
	w.str = str
	w.head = req != nil && req.Method == http.MethodHead
	w.declared = -1
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// ReplaceHeader makes h the response's header map, in place of the one
// Header returns, before WriteHeader: a proxy hands over the upstream's
// header instead of copying it field by field.
func (w *responseWriter) ReplaceHeader(h http.Header) {
	if w.status == 0 {
		w.header = h
	}
}

// WriteHeader sends an informational response at once (1xx) or fixes the
// final status and headers; later calls are ignored, as net/http does.
func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 || w.done {
		return
	}
	if code < 100 || code >= len(statusCodes) {
		panic(fmt.Sprintf("h3: invalid WriteHeader code %d", code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // not in HTTP/3
			w.appendHeaders(code)
			_ = w.flush()
		}
		return
	}
	w.status = code
	w.bodyAllowed = !w.head && code != http.StatusNoContent && code != http.StatusNotModified
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	for _, v := range w.header["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
	w.appendHeaders(code)
}

// appendHeaders appends a HEADERS frame with the status and the header
// fields HTTP/3 may carry.
func (w *responseWriter) appendHeaders(code int) {
	e := getEncoder()
	defer putEncoder(e)
	e.field(":status", statusCodes[code])
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		name := lowerName(k)
		if connectionSpecific(name) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				e.field(name, v)
			}
		}
	}
	if e.err != nil {
		w.fail(fmt.Errorf("h3: encoding the response headers: %w", e.err))
		return
	}
	w.buffer()
	w.buf.b = appendFrameHeader(w.buf.b, frameHeaders, uint64(len(e.w.b)))
	w.buf.b = append(w.buf.b, e.w.b...)
}

func (w *responseWriter) buffer() {
	if w.buf == nil {
		w.buf = writeBufs.Get().(*writeBuf)
		w.buf.b = w.buf.b[:0]
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriteAfterReturn
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case w.err != nil:
		return 0, w.err
	case w.head:
		return len(p), nil
	case !w.bodyAllowed:
		return 0, http.ErrBodyNotAllowed
	case w.declared >= 0 && w.written+int64(len(p)) > w.declared:
		return 0, http.ErrContentLength
	case len(p) == 0:
		return 0, nil
	}
	w.written += int64(len(p))
	w.buffer()
	w.buf.b = appendFrameHeader(w.buf.b, frameData, uint64(len(p)))
	if len(w.buf.b)+len(p) <= flushAt {
		w.buf.b = append(w.buf.b, p...)
		return len(p), nil
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	if _, err := w.str.Write(p); err != nil {
		w.fail(err)
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends what is buffered (the headers at least).
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush reporting a failed stream (http.ResponseController
// calls it).
func (w *responseWriter) FlushError() error {
	if w.done {
		return errWriteAfterReturn
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.flush()
}

func (w *responseWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if w.buf == nil || len(w.buf.b) == 0 {
		return nil
	}
	_, err := w.str.Write(w.buf.b)
	w.buf.b = w.buf.b[:0]
	if err != nil {
		w.fail(err)
	}
	return w.err
}

func (w *responseWriter) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("h3: writing the response: %w", err)
	}
}

// finish ends the response when the handler returns: trailers, the end of
// the stream. A body shorter than its content-length resets the stream
// rather than end it as if whole.
func (w *responseWriter) finish() {
	if w.done {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.done = true
	defer w.release()
	if w.err == nil && w.bodyAllowed && w.declared >= 0 && w.written < w.declared {
		w.fail(fmt.Errorf("%d bytes of a %d-byte body written", w.written, w.declared))
	}
	if w.err == nil {
		if t := w.trailer(); len(t) > 0 {
			w.buffer()
			b, err := appendTrailers(w.buf.b, t)
			if err != nil {
				w.fail(err)
			} else {
				w.buf.b = b
			}
		}
	}
	if w.flush() != nil {
		w.str.CancelWrite(quic.StreamErrorCode(errInternal))
		return
	}
	_ = w.str.Close()
}

// CloseWrite ends the response — what is buffered, then the end of the
// stream — while the handler goes on reading the request body: one half
// of a CONNECT tunnel closing (a TCP FIN carried as a QUIC FIN). Later
// writes fail.
func (w *responseWriter) CloseWrite() error {
	if w.done {
		return errWriteAfterReturn
	}
	w.finish()
	return w.err
}

// trailer collects the trailers the handler set: "Trailer:"-prefixed keys
// and the names the Trailer header declared.
func (w *responseWriter) trailer() http.Header {
	var t http.Header
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(name)] = vv
		}
	}
	for _, name := range w.trailers {
		if vv := w.header[name]; len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[name] = vv
		}
	}
	return t
}

// abort resets the stream: the handler panicked (http.ErrAbortHandler
// included), and a response cut short must not look whole.
func (w *responseWriter) abort() {
	w.done = true
	w.str.CancelWrite(quic.StreamErrorCode(errInternal))
	w.release()
}

func (w *responseWriter) release() {
	if w.buf != nil {
		if cap(w.buf.b) <= 64<<10 {
			writeBufs.Put(w.buf)
		}
		w.buf = nil
	}
}

// localReply answers a request the server refused before any handler saw
// it.
func (w *responseWriter) localReply(code int, msg string) {
	w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
	w.header["Content-Length"] = []string{strconv.Itoa(len(msg) + 1)}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
	w.finish()
}
