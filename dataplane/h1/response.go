package h1

import (
	"bufio"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// response is the http.ResponseWriter of one exchange. The head is written
// at the first Write or Flush (or at the end); the body is framed by the
// handler's Content-Length when it set one, chunked otherwise, and trailers
// (declared, or keyed with http.TrailerPrefix) follow a chunked body.
type response struct {
	bw     *bufio.Writer
	req    *http.Request
	header http.Header

	status        int
	wroteHeader   bool // WriteHeader called (final status)
	headSent      bool // status line and header written to bw
	contentLength int64
	written       int64
	chunked       bool
	noBody        bool // HEAD, 1xx, 204, 304
	closeAfter    bool
	declared      []string // trailer names announced in the Trailer header
	failed        bool     // a write to the client failed
}

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// ReplaceHeader makes h the response's header map, in place of the one
// Header returns, before WriteHeader: a proxy hands over the upstream's
// header instead of copying it field by field.
func (w *response) ReplaceHeader(h http.Header) {
	if !w.wroteHeader {
		w.header = h
	}
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: sent now, the final status follows.
		w.writeStatusLine(code)
		_ = w.Header().Write(w.bw)
		_, _ = w.bw.WriteString("\r\n")
		_ = w.bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(false)
	}
	if w.failed {
		return 0, errClientGone
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.chunked {
		_, _ = w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = w.bw.WriteString("\r\n")
	}
	if _, err := w.bw.Write(p); err != nil {
		w.failed = true
		return 0, err
	}
	if w.chunked {
		_, _ = w.bw.WriteString("\r\n")
	}
	return len(p), nil
}

var errClientGone = errors.New("h1: the client connection failed")

// Flush sends what is buffered (http.Flusher).
func (w *response) Flush() { _ = w.FlushError() }

// FlushError sends what is buffered (what http.ResponseController calls).
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(false)
	}
	if err := w.bw.Flush(); err != nil {
		w.failed = true
		return err
	}
	return nil
}

// sendHead writes the status line and header, choosing the body's framing.
// final: the handler is done, so a body never written has length 0.
func (w *response) sendHead(final bool) {
	w.headSent = true
	h := w.Header()
	code := w.status
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			h.Del("Content-Length")
		}
	}
	delete(h, "Transfer-Encoding")
	trailers := w.trailerNames()
	switch {
	case w.noBody:
	case w.contentLength >= 0 && len(trailers) == 0:
	case final && len(trailers) == 0:
		w.contentLength = 0
		h["Content-Length"] = zero
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		w.contentLength = -1
		delete(h, "Content-Length")
	default:
		w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
	}
	if w.req.Close || !w.req.ProtoAtLeast(1, 1) || hasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	if w.closeAfter && len(h["Connection"]) == 0 {
		h["Connection"] = closeValue
	}
	if w.chunked {
		h["Transfer-Encoding"] = chunkedValue
		if len(trailers) > 0 {
			h["Trailer"] = []string{strings.Join(trailers, ", ")}
		}
	}
	w.declared = trailers
	w.writeStatusLine(code)
	if err := writeHeader(w.bw, h); err != nil {
		w.failed = true
	}
	_, _ = w.bw.WriteString("\r\n")
}

var (
	zero         = []string{"0"}
	closeValue   = []string{"close"}
	chunkedValue = []string{"chunked"}
)

// trailerNames lists the trailers the handler announced: in a Trailer
// header, or as keys with http.TrailerPrefix.
func (w *response) trailerNames() []string {
	var names []string
	for _, v := range w.header["Trailer"] {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, http.CanonicalHeaderKey(n))
			}
		}
	}
	delete(w.header, "Trailer")
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			names = append(names, http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix)))
		}
	}
	return names
}

func (w *response) writeStatusLine(code int) {
	if w.req.ProtoAtLeast(1, 1) {
		_, _ = w.bw.WriteString("HTTP/1.1 ")
	} else {
		_, _ = w.bw.WriteString("HTTP/1.0 ")
	}
	_, _ = w.bw.WriteString(strconv.Itoa(code))
	_ = w.bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	_, _ = w.bw.WriteString(text)
	_, _ = w.bw.WriteString("\r\n")
}

// finish ends the response after the handler returns. It reports whether
// the response was complete (a short body spoils the connection).
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(true)
	}
	if w.failed {
		return false
	}
	if w.chunked {
		_, _ = w.bw.WriteString("0\r\n")
		names := w.declared
		for k := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && !slices.Contains(names, http.CanonicalHeaderKey(name)) {
				names = append(names, http.CanonicalHeaderKey(name))
			}
		}
		for _, name := range names {
			vv := w.header[http.TrailerPrefix+name]
			if vv == nil {
				vv = w.header[name]
			}
			for _, v := range vv {
				_, _ = w.bw.WriteString(name)
				_, _ = w.bw.WriteString(": ")
				_, _ = w.bw.WriteString(headerValue(v))
				_, _ = w.bw.WriteString("\r\n")
			}
		}
		_, _ = w.bw.WriteString("\r\n")
	}
	if !w.noBody && w.contentLength >= 0 && w.written != w.contentLength {
		return false
	}
	return true
}

// writeHeader writes h as header lines, skipping trailer keys and
// replacing line breaks in values (no header injection).
func writeHeader(bw *bufio.Writer, h http.Header) error {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !validName(k) {
			continue
		}
		for _, v := range vv {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(headerValue(v))
			if _, err := bw.WriteString("\r\n"); err != nil {
				return err
			}
		}
	}
	return nil
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}

// headerValue replaces CR and LF (which would end the header line) with
// spaces, as net/http does.
func headerValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return strings.TrimSpace(v)
}

func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
