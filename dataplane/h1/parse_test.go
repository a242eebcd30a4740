package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// responseSeeds are responses the parser must read as net/http does (or
// refuse where net/http refuses).
var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\n\r\nuntil the end",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-A: 2\r\nx-lower: v\r\nContent-Length: 1\r\n\r\nz",
	"HTTP/1.1 200 OK\r\nX-Space:   padded \t\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",               // short body
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", // cut chunk
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	// Refused by both.
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
	"HTTP/1.1 20 OK\r\n\r\n",
	"HTTP/1.1 2000 OK\r\n\r\n",
	"HTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	"HTTP/1.1 200 OK\r\n",
	"",
}

// Stricter than net/http on purpose (RFC 9112 §6.3): refused here, read
// there.
var refusedOnlyHere = map[string]bool{
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n": true,
	"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\nContent-Length: 0\r\n\r\n":                                   true,
	"HTTP/1.1 200 OK\r\nBad Name: v\r\nContent-Length: 0\r\n\r\n":                                       true,
}

type parsed struct {
	Code          int
	Minor         int
	Header        http.Header
	ContentLength int64
	Close         bool
	Body          string
	BodyErr       bool
	Trailer       http.Header
}

func readWith(read func(*bufio.Reader, *http.Request) (*http.Response, error), raw, method string) (*parsed, error) {
	req, _ := http.NewRequest(method, "http://app/", nil)
	resp, err := read(bufio.NewReaderSize(strings.NewReader(raw), 16), req)
	if err != nil {
		return nil, err
	}
	b, berr := io.ReadAll(resp.Body)
	p := &parsed{Code: resp.StatusCode, Minor: resp.ProtoMinor, Header: resp.Header, ContentLength: resp.ContentLength,
		Close: resp.Close, Body: string(b), BodyErr: berr != nil, Trailer: resp.Trailer}
	if len(p.Trailer) == 0 {
		p.Trailer = nil
	}
	return p, nil
}

// compare checks ReadResponse against http.ReadResponse on raw; with
// stricter, a refusal as malformed where net/http reads is allowed.
func compare(t *testing.T, raw, method string, stricter bool) {
	t.Helper()
	want, werr := readWith(http.ReadResponse, raw, method)
	got, gerr := readWith(ReadResponse, raw, method)
	agree(t, fmt.Sprintf("%q (%s)", raw, method), got, gerr, want, werr, refusedOnlyHere[raw] || stricter)
}

// agree checks a parse of ours (got, gerr) against net/http's of the same
// input: both refuse, or both read it alike; with mayRefuse, refusing it
// as malformed where net/http reads it is allowed too.
func agree[T any](t *testing.T, input string, got T, gerr error, want T, werr error, mayRefuse bool) {
	t.Helper()
	switch {
	case gerr != nil && (werr != nil || mayRefuse && errors.Is(gerr, ErrMalformed)):
		return // both refuse, or we refuse on purpose
	case gerr != nil:
		t.Errorf("%s: refused (%v), net/http reads it", input, gerr)
	case werr != nil:
		t.Errorf("%s: read, net/http refuses it (%v)", input, werr)
	case !reflect.DeepEqual(got, want):
		t.Errorf("%s:\n got %+v\nwant %+v", input, got, want)
	}
}

func TestReadResponseAgreesWithNetHTTP(t *testing.T) {
	for _, raw := range responseSeeds {
		compare(t, raw, http.MethodGet, false)
		compare(t, raw, http.MethodHead, false)
	}
	for raw := range refusedOnlyHere {
		if _, err := readWith(ReadResponse, raw, http.MethodGet); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want it refused as malformed", raw, err)
		}
	}
}

func TestReadResponseRefusesAHugeHead(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\n"
	if _, err := readWith(ReadResponse, raw, http.MethodGet); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("a %d-byte head: %v, want ErrHeaderTooLarge", len(raw), err)
	}
	// A long line across the reader's buffer is fine below the limit.
	raw = "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("b", 5000) + "\r\nContent-Length: 0\r\n\r\n"
	compare(t, raw, http.MethodGet, false)
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, raw string, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		// Refusing more than net/http as malformed is allowed here (header
		// names with spaces, line folding, CL with TE); reading what it
		// refuses, or reading differently, is not.
		if strings.Contains(strings.ReplaceAll(raw, "\r\n", ""), "\n") && strings.Contains(strings.ToLower(raw), "chunked") {
			t.Skip() // trailer sections: CRLF only here, net/http's own rules there
		}
		compare(t, raw, method, true)
	})
}

// A typical answer of an app: the head parsed and the body read.
const typicalResponse = "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\nDate: Fri, 27 Nov 2026 12:00:00 GMT\r\nX-Request-Id: 3c1d1f0e-8a1b-4b47-9f1e-0d7c5a1e2b3c\r\n\r\n"

// benchmarkParse parses raw with parse from a reused reader, b.N times,
// and reads the body parse returns to its end.
func benchmarkParse(b *testing.B, raw string, parse func(*bufio.Reader) (io.Reader, error)) {
	sr := strings.NewReader(raw)
	br := bufio.NewReaderSize(sr, 4<<10)
	buf := make([]byte, 4<<10)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(raw)
		br.Reset(sr)
		body, err := parse(br)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := body.Read(buf); err != nil {
				break
			}
		}
	}
}

func benchmarkRead(b *testing.B, read func(*bufio.Reader, *http.Request) (*http.Response, error)) {
	req, _ := http.NewRequest(http.MethodPost, "http://app/", nil)
	benchmarkParse(b, typicalResponse+strings.Repeat("x", 1024), func(br *bufio.Reader) (io.Reader, error) {
		resp, err := read(br, req)
		if err != nil {
			return nil, err
		}
		return resp.Body, nil
	})
}

// BenchmarkReadResponse compares the h1 parser with net/http's on the
// same answer (baseline: nethttp).
func BenchmarkReadResponse(b *testing.B) {
	b.Run("h1", func(b *testing.B) { benchmarkRead(b, ReadResponse) })
	b.Run("nethttp", func(b *testing.B) { benchmarkRead(b, http.ReadResponse) })
}

// requestSeeds are requests ReadRequest must read as net/http does (or
// refuse where net/http refuses).
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: b\r\n\r\n",
	"POST /echo?x=1 HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
	"GET http://b.default/x HTTP/1.1\r\nHost: other\r\n\r\n",
	"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n",
	"CONNECT /rpc HTTP/1.1\r\nHost: b\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: b\r\nTrailer: X-Sum\r\nContent-Length: 1\r\n\r\nz",
	"GET / HTTP/1.1\nHost: b\n\n",
	"GET / HTTP/1.1\r\nHost: b\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: b\r\nX-A: 1\r\nX-A: 2\r\nx-lower: v\r\n\r\n",
	"GET /%20a%2Fb HTTP/1.1\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",                                                   // no Host: the server refuses it, not the parser
	"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhel",               // short body
	"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", // cut chunk
	"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	// Refused by both.
	"GET / HTTP/1.1\r\nHost: b\r\nHost: c\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: -1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: gzip\r\n\r\n",
	"G(T / HTTP/1.1\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1 extra\r\nHost: b\r\n\r\n",
	"GET relative HTTP/1.1\r\nHost: b\r\n\r\n",
	"GET /\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: b\r\n",
	"",
}

// Stricter than net/http on purpose (RFC 9112 §6): refused here, read
// there — the ways to make a proxy and the server behind it disagree on
// where a request ends.
var requestsRefusedOnlyHere = map[string]bool{
	"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n": true,
	"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello":                              true,
	"GET / HTTP/1.1\r\nHost: b\r\nX: 1\r\n folded\r\n\r\n":                                                         true,
	"GET / HTTP/1.2\r\nHost: b\r\n\r\n":                                                                            true,
}

type parsedRequest struct {
	Method, RequestURI, URL, Proto, Host string
	Minor                                int
	Header                               http.Header
	ContentLength                        int64
	TransferEncoding                     []string
	Close                                bool
	Body                                 string
	BodyErr                              bool
	Trailer                              http.Header
}

func readRequestWith(read func(*bufio.Reader) (*http.Request, error), raw string) (*parsedRequest, error) {
	req, err := read(bufio.NewReaderSize(strings.NewReader(raw), 16))
	if err != nil {
		return nil, err
	}
	b, berr := io.ReadAll(req.Body)
	p := &parsedRequest{Method: req.Method, RequestURI: req.RequestURI, URL: req.URL.String(), Proto: req.Proto, Host: req.Host,
		Minor: req.ProtoMinor, Header: req.Header, ContentLength: req.ContentLength, TransferEncoding: req.TransferEncoding,
		Close: req.Close, Body: string(b), BodyErr: berr != nil, Trailer: req.Trailer}
	if len(p.Trailer) == 0 {
		p.Trailer = nil
	}
	return p, nil
}

// compareRequest checks ReadRequest against http.ReadRequest on raw; with
// stricter, a refusal as malformed where net/http reads is allowed.
func compareRequest(t *testing.T, raw string, stricter bool) {
	t.Helper()
	want, werr := readRequestWith(http.ReadRequest, raw)
	got, gerr := readRequestWith(ReadRequest, raw)
	agree(t, fmt.Sprintf("%q", raw), got, gerr, want, werr, requestsRefusedOnlyHere[raw] || stricter)
}

func TestReadRequestAgreesWithNetHTTP(t *testing.T) {
	for _, raw := range requestSeeds {
		compareRequest(t, raw, false)
	}
	for raw := range requestsRefusedOnlyHere {
		if _, err := readRequestWith(ReadRequest, raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want it refused as malformed", raw, err)
		}
	}
	// A clean close between requests is io.EOF (the server says nothing),
	// a head cut short io.ErrUnexpectedEOF (the server answers 400).
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader(""))); err != io.EOF {
		t.Errorf("empty connection: %v, want io.EOF", err)
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("GET / HT"))); err != io.ErrUnexpectedEOF {
		t.Errorf("cut head: %v, want io.ErrUnexpectedEOF", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if strings.Contains(strings.ReplaceAll(raw, "\r\n", ""), "\n") && strings.Contains(strings.ToLower(raw), "chunked") {
			t.Skip() // trailer sections: CRLF only here, net/http's own rules there
		}
		compareRequest(t, raw, true)
	})
}

// A typical call of an app through its sidecar.
const typicalRequest = "POST /echo HTTP/1.1\r\nHost: b\r\nUser-Agent: fortio.org/fortio-1.67.1\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\nX-Request-Id: 3c1d1f0e-8a1b-4b47-9f1e-0d7c5a1e2b3c\r\n\r\n"

// BenchmarkReadRequest compares the h1 parser with net/http's on the same
// request (baseline: nethttp).
func BenchmarkReadRequest(b *testing.B) {
	run := func(b *testing.B, read func(*bufio.Reader) (*http.Request, error)) {
		benchmarkParse(b, typicalRequest+strings.Repeat("x", 1024), func(br *bufio.Reader) (io.Reader, error) {
			req, err := read(br)
			if err != nil {
				return nil, err
			}
			return req.Body, nil
		})
	}
	b.Run("h1", func(b *testing.B) { run(b, ReadRequest) })
	b.Run("nethttp", func(b *testing.B) { run(b, http.ReadRequest) })
}
