package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// MaxHeaderBytes bounds a message head (start line and header fields); a
// larger one is refused. Envoy's default limit is 60 KiB.
const MaxHeaderBytes = 64 << 10

// ErrHeaderTooLarge is the error for a message head past MaxHeaderBytes.
var ErrHeaderTooLarge = fmt.Errorf("h1: message head larger than %d bytes", MaxHeaderBytes)

// ErrMalformed marks a message that is not HTTP/1.1 as RFC 9112 has it
// (the error says what is wrong).
var ErrMalformed = errors.New("h1: malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readHead reads a message head — the start line and the header fields, up
// to the empty line — and returns it as one string: every name and value
// the parsers take out of it is a substring, so a message's header costs
// one allocation, not one per field.
func readHead(br *bufio.Reader) (string, error) {
	bp := headBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; headBufs.Put(bp) }()
	lineStart := 0
	for {
		part, err := br.ReadSlice('\n')
		if len(buf)+len(part) > MaxHeaderBytes {
			return "", ErrHeaderTooLarge
		}
		buf = append(buf, part...)
		if err == bufio.ErrBufferFull {
			continue // a line longer than the reader's buffer: read on
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if line := buf[lineStart:]; len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			if lineStart == 0 {
				return "", malformed("empty first line")
			}
			return string(buf), nil // the empty line that ends the head
		}
		lineStart = len(buf)
	}
}

// nextLine cuts the first line (without its CRLF or LF) off s.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseFields parses header field lines up to the empty line that ends
// them (rest of a head). Names are canonicalized (no allocation when they
// already are); values are trimmed substrings of s; single values share
// one backing array.
func parseFields(s string) (http.Header, error) {
	n := strings.Count(s, "\n")
	h := make(http.Header, n)
	values := make([]string, n)
	for {
		var line string
		line, s = nextLine(s)
		if line == "" {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, malformed("obsolete line folding in %q", line)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil, malformed("header line %q", line)
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, malformed("value of header %s", name)
		}
		k := textproto.CanonicalMIMEHeaderKey(name)
		if vv := h[k]; vv != nil {
			h[k] = append(vv, value)
			continue
		}
		values[0] = value
		h[k], values = values[:1:1], values[1:]
	}
}

// ReadResponse reads an HTTP/1.x response to req from br, as
// http.ReadResponse does, with the head in one allocation and stricter
// framing: both Transfer-Encoding and Content-Length, a transfer coding
// other than chunked, or differing Content-Lengths are errors (RFC 9112
// §6.3: each is a sign of response splitting). The body reads from br.
func ReadResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	head, err := readHead(br)
	if err != nil {
		return nil, err
	}
	line, fields := nextLine(head)
	resp := &http.Response{Request: req}
	proto, status, ok := strings.Cut(line, " ")
	switch proto {
	case "HTTP/1.1":
		resp.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		return nil, malformed("status line %q", line)
	}
	resp.Proto, resp.ProtoMajor = proto, 1
	code, _, _ := strings.Cut(status, " ")
	if !ok || len(code) != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return nil, malformed("status line %q", line)
	}
	resp.StatusCode = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	resp.Status = status
	if resp.Header, err = parseFields(fields); err != nil {
		return nil, err
	}
	if resp.Close = closes(resp.Header, resp.ProtoMinor); resp.Close && resp.ProtoMinor == 1 {
		delete(resp.Header, "Connection") // "close": told by resp.Close
	}
	n, chunked, err := framing(resp.Header)
	if err != nil {
		return nil, err
	}
	if chunked && resp.ProtoMinor == 0 {
		return nil, malformed("Transfer-Encoding in an HTTP/1.0 message (faulty framing, RFC 9112 §6.1)")
	}
	if chunked {
		resp.TransferEncoding = []string{"chunked"}
		delete(resp.Header, "Transfer-Encoding")
		resp.Trailer = declaredTrailers(resp.Header)
	}
	switch {
	case req.Method == http.MethodHead:
		resp.ContentLength, resp.Body = n, http.NoBody // the length of what a GET would get
	case resp.StatusCode/100 == 1 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		resp.ContentLength, resp.Body = 0, http.NoBody
	case chunked:
		resp.ContentLength = -1
		resp.Body = &chunkedBody{cr: httputil.NewChunkedReader(br), br: br, trailer: &resp.Trailer}
	case n == 0:
		resp.ContentLength, resp.Body = 0, http.NoBody
	case n > 0:
		resp.ContentLength, resp.Body = n, &lengthBody{br: br, left: n}
	default: // neither: the body runs to the end of the connection
		resp.ContentLength, resp.Close, resp.Body = -1, true, &closeBody{br: br}
	}
	return resp, nil
}

// ReadRequest reads an HTTP/1.x request from br, as http.ReadRequest does,
// with the head in one allocation and ReadResponse's framing rules (RFC
// 9112 §6.3): both Transfer-Encoding and Content-Length, a coding other
// than chunked, Transfer-Encoding in HTTP/1.0, differing Content-Lengths,
// obsolete line folding and versions other than 1.0 and 1.1 are errors —
// each a way to smuggle a request past a proxy. The body reads from br.
func ReadRequest(br *bufio.Reader) (*http.Request, error) {
	head, err := readHead(br)
	if err != nil {
		return nil, err
	}
	line, fields := nextLine(head)
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || strings.IndexFunc(method, notToken) >= 0 {
		return nil, malformed("request line %q", line)
	}
	req := &http.Request{Method: method, RequestURI: target, Proto: proto, ProtoMajor: 1}
	switch proto {
	case "HTTP/1.1":
		req.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		return nil, malformed("request line %q", line)
	}
	// CONNECT names an authority (host:port), not a URL (as net/http).
	rawURL, justAuthority := target, method == http.MethodConnect && !strings.HasPrefix(target, "/")
	if justAuthority {
		rawURL = "http://" + target
	}
	if req.URL, err = url.ParseRequestURI(rawURL); err != nil {
		return nil, malformed("request target %q: %v", target, err)
	}
	if justAuthority {
		req.URL.Scheme = ""
	}
	if req.Header, err = parseFields(fields); err != nil {
		return nil, err
	}
	hosts := req.Header["Host"]
	if len(hosts) > 1 {
		return nil, malformed("%d Host headers", len(hosts))
	}
	if req.Host = req.URL.Host; req.Host == "" && len(hosts) == 1 {
		req.Host = hosts[0]
	}
	delete(req.Header, "Host") // it is req.Host now (as net/http)
	if pragma := req.Header["Pragma"]; len(pragma) > 0 && pragma[0] == "no-cache" && req.Header["Cache-Control"] == nil {
		req.Header["Cache-Control"] = []string{"no-cache"} // HTTP/1.0's way of saying it, as net/http
	}
	req.Close = closes(req.Header, req.ProtoMinor)
	n, chunked, err := framing(req.Header)
	if err != nil {
		return nil, err
	}
	switch {
	case chunked && req.ProtoMinor == 0:
		return nil, malformed("Transfer-Encoding in an HTTP/1.0 message (faulty framing, RFC 9112 §6.1)")
	case chunked:
		req.TransferEncoding = []string{"chunked"}
		delete(req.Header, "Transfer-Encoding")
		req.Trailer = declaredTrailers(req.Header)
		req.ContentLength = -1
		req.Body = &chunkedBody{cr: httputil.NewChunkedReader(br), br: br, trailer: &req.Trailer}
	case n > 0:
		req.ContentLength, req.Body = n, &lengthBody{br: br, left: n}
	default: // no body: a request without framing has none (RFC 9112 §6.3)
		req.ContentLength, req.Body = 0, http.NoBody
	}
	return req, nil
}

func notToken(r rune) bool { return !httpguts.IsTokenRune(r) }

// closes reports whether the connection ends after this message: it says
// close, or it is HTTP/1.0 and does not say keep-alive.
func closes(h http.Header, minor int) bool {
	conn := h["Connection"]
	return httpguts.HeaderValuesContainsToken(conn, "close") ||
		minor == 0 && !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
}

// framing reads Content-Length and Transfer-Encoding: the length (-1 if
// none) and whether the body is chunked.
func framing(h http.Header) (n int64, chunked bool, err error) {
	te, cl := h["Transfer-Encoding"], h["Content-Length"]
	if len(te) > 0 {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return 0, false, malformed("transfer encoding %q (only chunked is supported)", te)
		}
		if len(cl) > 0 {
			return 0, false, malformed("both Transfer-Encoding and Content-Length")
		}
		return -1, true, nil
	}
	if len(cl) == 0 {
		return -1, false, nil
	}
	for _, v := range cl[1:] {
		if v != cl[0] {
			return 0, false, malformed("differing Content-Length values %q", cl)
		}
	}
	h["Content-Length"] = cl[:1]
	n, err = strconv.ParseInt(cl[0], 10, 64)
	if err != nil || n < 0 || cl[0][0] == '+' {
		return 0, false, malformed("Content-Length %q", cl[0])
	}
	return n, false, nil
}

// declaredTrailers returns the trailer names the Trailer header declares,
// without values yet (as net/http has them until the body's end).
func declaredTrailers(h http.Header) http.Header {
	vv := h["Trailer"]
	if len(vv) == 0 {
		return nil
	}
	t := http.Header{}
	for _, v := range vv {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				t[textproto.CanonicalMIMEHeaderKey(name)] = nil
			}
		}
	}
	delete(h, "Trailer")
	return t
}

// lengthBody is a body of known length.
type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF // the connection ended before the body
	}
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// closeBody is a body that runs to the end of the connection.
type closeBody struct{ br *bufio.Reader }

func (b *closeBody) Read(p []byte) (int, error) { return b.br.Read(p) }
func (b *closeBody) Close() error               { return nil }

// chunkedBody is a chunked body; at its end it reads the trailer section
// into *trailer.
type chunkedBody struct {
	cr      io.Reader
	br      *bufio.Reader
	trailer *http.Header
	done    bool
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		if terr := b.readTrailer(); terr != nil {
			return n, terr
		}
		b.done = true
	} else if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *chunkedBody) readTrailer() error {
	switch p, _ := b.br.Peek(2); {
	case len(p) < 2:
		return io.ErrUnexpectedEOF // not even the CRLF that ends the body
	case p[0] == '\r' && p[1] == '\n':
		_, _ = b.br.Discard(2) // no trailer fields
		return nil
	}
	head, err := readHead(b.br) // fields only: the first line is one
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if strings.Count(head, "\n") != strings.Count(head, "\r\n") {
		return malformed("trailer section with bare LF line endings")
	}
	t, err := parseFields(head)
	if err != nil {
		return err
	}
	if *b.trailer == nil {
		*b.trailer = http.Header{}
	}
	for k, vv := range t {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Host":
			continue // framing fields have no place in trailers
		}
		(*b.trailer)[k] = vv
	}
	return nil
}

func (b *chunkedBody) Close() error { return nil }
