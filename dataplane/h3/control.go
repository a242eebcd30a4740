package h3

import (
	"context"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
)

// openControl opens our control stream and sends its type and SETTINGS
// (no dynamic QPACK table, the other settings given as id, value pairs).
func openControl(qc *quic.Conn, settings ...uint64) (*quic.SendStream, error) {
	ctrl, err := qc.OpenUniStream()
	if err != nil {
		return nil, err
	}
	var payload []byte
	for _, v := range settings {
		payload = quicvarint.Append(payload, v)
	}
	b := quicvarint.Append(nil, streamControl)
	b = appendFrameHeader(b, frameSettings, uint64(len(payload)))
	if _, err := ctrl.Write(append(b, payload...)); err != nil {
		return nil, err
	}
	return ctrl, nil
}

// acceptUniStreams serves the peer's unidirectional streams for the life of
// the connection: its control stream is read (goAway is called on the
// peer's GOAWAY; nil ignores it), QPACK streams are drained (no dynamic
// table is allowed, so they carry nothing we use), others are refused.
// server says which side we are: a client never grants a push ID, and a
// server never takes a push stream.
func acceptUniStreams(qc *quic.Conn, server bool, goAway func()) {
	var sawControl bool
	for {
		str, err := qc.AcceptUniStream(context.Background())
		if err != nil {
			return
		}
		typ, err := quicvarint.Read(quicvarint.NewReader(str))
		if err != nil {
			str.CancelRead(quic.StreamErrorCode(errStreamCreation))
			continue
		}
		switch typ {
		case streamControl:
			if sawControl {
				closeConn(qc, errStreamCreation, "duplicate control stream")
				return
			}
			sawControl = true
			go readControl(qc, str, goAway)
		case streamEncoder, streamDecoder:
			go drain(str)
		case streamPush:
			if server {
				closeConn(qc, errStreamCreation, "push stream from a client")
			} else {
				closeConn(qc, errIDError, "push stream without MAX_PUSH_ID")
			}
			return
		default:
			str.CancelRead(quic.StreamErrorCode(errStreamCreation))
		}
	}
}

func closeConn(qc *quic.Conn, code uint64, msg string) {
	_ = qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

func drain(str *quic.ReceiveStream) {
	buf := make([]byte, 512)
	for {
		if _, err := str.Read(buf); err != nil {
			return
		}
	}
}

// readControl reads the peer's control stream: SETTINGS first, then
// GOAWAY; everything else there is ignored or, if it belongs on request
// streams, a connection error.
func readControl(qc *quic.Conn, str *quic.ReceiveStream, goAway func()) {
	br := newReader(str)
	defer putReader(br)
	first := true
	for {
		typ, n, err := readFrameHeader(br)
		if err != nil {
			if qc.Context().Err() == nil {
				closeConn(qc, errClosedCritical, "control stream closed")
			}
			return
		}
		if first && typ != frameSettings {
			closeConn(qc, errMissingSettings, "first frame on the control stream is not SETTINGS")
			return
		}
		first = false
		switch typ {
		case frameData, frameHeaders:
			closeConn(qc, errFrameUnexpected, "DATA or HEADERS on the control stream")
			return
		case frameGoAway:
			if goAway != nil {
				goAway()
			}
		}
		// SETTINGS (nothing in it changes how we send), GOAWAY, MAX_PUSH_ID,
		// CANCEL_PUSH, unknown: the rest of the frame is not needed.
		if err := skip(br, n); err != nil {
			return
		}
	}
}
