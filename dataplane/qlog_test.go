package dataplane_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// A request over QUIC costs the answering sidecar one packet: the answer's
// HEADERS, DATA and FIN leave together, and no MAX_STREAMS frame follows
// each request (quic-go grants every closed stream back with one, a packet
// of its own and an ACK from the peer, unless the stream limit is QUIC's
// maximum), nor a STOP_SENDING frame after a request body read whole.
// b's qlog trace (--qlog-dir) counts them.
func TestOneQUICPacketPerAnswer(t *testing.T) {
	dir, clientDir := t.TempDir(), t.TempDir()
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.QlogDir = clientDir }))
	b := cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.QlogDir = dir }))
	waitFor(t, "a can reach b", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == 200
	})
	const n = 40
	for i := range n {
		if i%2 == 0 {
			if resp, e := call(t, a.Info.Outbound, "b", "/", nil); resp.StatusCode != 200 {
				t.Fatalf("call: %d %s", resp.StatusCode, e.Body)
			}
			continue
		}
		// A request with a body, which b's proxy reads to its
		// content-length: b must not ask a to stop sending it.
		req, _ := http.NewRequest("POST", "http://"+a.Info.Outbound+"/", strings.NewReader(strings.Repeat("x", 1024)))
		req.Host = "b"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST: %d", resp.StatusCode)
		}
	}
	b.Stop() // closes the connection: the trace is flushed

	var tr serverTrace
	waitFor(t, "b's qlog trace of the connection", func() bool {
		tr = readServerTrace(t, dir)
		return tr.closed
	})
	t.Logf("b: %d 1-RTT packets, %d answers in %d, %d MAX_STREAMS frames, %d STOP_SENDING frames", tr.packets, tr.answers, tr.answerPackets, tr.maxStreams, tr.stopSending)
	// a traced its side too, readable by its user only.
	if files, _ := filepath.Glob(filepath.Join(clientDir, "*_client.sqlog")); len(files) != 1 {
		t.Errorf("a's traces: %v, want one client trace", files)
	} else if fi, err := os.Stat(files[0]); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("a's trace %s has mode %v, want 0600", files[0], fi.Mode())
	}
	if tr.answers < n {
		t.Fatalf("b's trace shows %d answers, want at least %d", tr.answers, n)
	}
	if tr.maxStreams != 0 {
		t.Errorf("b sent %d MAX_STREAMS frames over %d requests, want none", tr.maxStreams, tr.answers)
	}
	// The proxy stops reading at the content-length; when the stream's
	// end has not arrived by then (a FIN in a later packet) b asks a to
	// stop. In this test both sidecars share one process with two Ps, so
	// a's connection loop can pack the body before the stream's close
	// and send the FIN a packet later; on a loaded machine (make test
	// runs packages side by side) that packet can come after b's answer:
	// 6 of 20 once in CI, 0–2 otherwise. One per request with a body
	// would be the regression.
	if tr.stopSending > n/4 {
		t.Errorf("b sent %d STOP_SENDING frames for %d requests with bodies it read whole, want (nearly) none", tr.stopSending, n/2)
	}
	// Each answer in one packet: some slack for a HEADERS frame packed
	// before its DATA when the connection's goroutine runs on the other
	// core (tests run with GOMAXPROCS 2, the sidecar with 1).
	if tr.answerPackets > tr.answers*3/2+2 {
		t.Errorf("b's answers took %d packets for %d answers, want about one each", tr.answerPackets, tr.answers)
	}
}

type serverTrace struct {
	packets, answers, answerPackets, maxStreams, stopSending int
	closed                                                   bool
}

// readServerTrace reads the server side's qlog (JSON-SEQ) of the one QUIC
// connection in dir: 1-RTT packets sent, answers (a FIN on a request
// stream) and the packets that carried them, MAX_STREAMS and STOP_SENDING
// frames, and
// whether the connection has closed.
func readServerTrace(t *testing.T, dir string) serverTrace {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*_server.sqlog"))
	if len(files) != 1 {
		t.Fatalf("want one server trace in %s, have %v", dir, files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var tr serverTrace
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var ev struct {
			Name string
			Data struct {
				Header struct {
					PacketType string `json:"packet_type"`
				}
				Frames []struct {
					FrameType string `json:"frame_type"`
					StreamID  int64  `json:"stream_id"`
					Fin       bool
				}
			}
		}
		if json.Unmarshal([]byte(strings.TrimLeft(sc.Text(), "\x1e")), &ev) != nil {
			continue // the trace's header, or a record still being written
		}
		switch ev.Name {
		case "transport:connection_closed":
			tr.closed = true
		case "transport:packet_sent":
			if ev.Data.Header.PacketType != "1RTT" {
				continue
			}
			tr.packets++
			answerData := false
			for _, fr := range ev.Data.Frames {
				switch {
				case fr.FrameType == "max_streams":
					tr.maxStreams++
				case fr.FrameType == "stop_sending":
					tr.stopSending++
				case fr.FrameType == "stream" && fr.StreamID%4 == 0: // a request stream
					answerData = true
					if fr.Fin {
						tr.answers++
					}
				}
			}
			if answerData {
				tr.answerPackets++
			}
		}
	}
	return tr
}
