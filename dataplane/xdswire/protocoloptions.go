package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// The HTTP/1, HTTP/2, HTTP/3 and QUIC protocol options of clusters,
// connection managers and QUIC listeners. Each field is either accepted —
// it tunes buffers, parsers or flood limits and changes nothing a request
// gets — or refused when set, named in Refused: limits, timeouts and
// behaviours the proxy does not have (its own are Go's and quic-go's), so
// that a config asking for them is NACKed rather than silently run
// otherwise. A refusal inside a nested message is named with its path.

// HTTP1Options is envoy.config.core.v3.Http1ProtocolOptions.
type HTTP1Options struct {
	Refused string `json:"-"`
}

var http1Refused = map[protowire.Number]string{
	1: "allow_absolute_url", 2: "accept_http_10", 3: "default_host_for_http_10", 4: "header_key_format",
	5: "enable_trailers", 6: "allow_chunked_length", 7: "override_stream_error_on_invalid_http_message",
	8: "send_fully_qualified_url", 10: "allow_custom_methods", 11: "ignore_http_11_upgrade",
	// 9 use_balsa_parser: which parser, not what it accepts.
}

func (m *HTTP1Options) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		refuseSet(f, &m.Refused, http1Refused)
		return nil
	})
}

// HTTP2Options is envoy.config.core.v3.Http2ProtocolOptions.
type HTTP2Options struct {
	// AllowConnect advertises extended CONNECT (RFC 8441: upgrades such as
	// WebSockets over HTTP/2). Read and taken as it changes nothing here:
	// the proxy takes no upgrade but plain CONNECT (refusing the others),
	// which HTTP/2 carries without it, and Envoy would refuse an extended
	// CONNECT with no upgrade config for it as the proxy does.
	AllowConnect bool   `json:"allowConnect,omitempty"`
	Refused      string `json:"-"`
}

var http2Refused = map[protowire.Number]string{
	2: "max_concurrent_streams", 6: "allow_metadata", 12: "stream_error_on_invalid_http_messaging",
	13: "custom_settings_parameters", 14: "override_stream_error_on_invalid_http_message", 15: "connection_keepalive",
	19: "max_header_field_size_kb", 20: "disallow_obs_text",
	// Accepted: HPACK table and window sizes, outbound frame queue and
	// inbound flood limits, the codec, Huffman coding, metadata size,
	// stream reset rates.
}

func (m *HTTP2Options) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 5 {
			return f.boolean(&m.AllowConnect)
		}
		refuseSet(f, &m.Refused, http2Refused)
		return nil
	})
}

// HTTP3Options is envoy.config.core.v3.Http3ProtocolOptions.
type HTTP3Options struct {
	QUIC    *QUICOptions `json:"quicProtocolOptions,omitempty"`
	Refused string       `json:"-"`
}

var http3Refused = map[protowire.Number]string{
	2: "override_stream_error_on_invalid_http_message", 5: "allow_extended_connect", 6: "allow_metadata", 9: "disallow_obs_text",
	// Accepted: disable_qpack (the proxy's QPACK has no dynamic table),
	// disable_connection_flow_control_for_streams.
}

func (m *HTTP3Options) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.QUIC)
		}
		refuseSet(f, &m.Refused, http3Refused)
		return nil
	})
	if m.QUIC != nil {
		nested(&m.Refused, "quic_protocol_options", m.QUIC.Refused)
	}
	return err
}

// QUICOptions is envoy.config.core.v3.QuicProtocolOptions.
type QUICOptions struct {
	Refused string `json:"-"`
}

var quicRefused = map[protowire.Number]string{
	1: "max_concurrent_streams", 5: "connection_keepalive", 6: "connection_options", 7: "client_connection_options",
	8: "idle_network_timeout", 10: "client_packet_writer", 13: "enable_scone",
	// Accepted: window sizes, packet length, port migration and memory
	// reduction settings (a client's, on paths that degrade).
}

func (m *QUICOptions) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 13 {
			return refuseTrue(f, &m.Refused, "enable_scone")
		}
		refuseSet(f, &m.Refused, quicRefused)
		return nil
	})
}

// UDPListenerConfig is envoy.config.listener.v3.UdpListenerConfig: a UDP
// listener is a QUIC one only with QUICOptions.
type UDPListenerConfig struct {
	QUICOptions *ListenerQUICOptions `json:"quicOptions,omitempty"`
	Refused     string               `json:"-"`
}

var udpListenerRefused = map[protowire.Number]string{8: "udp_packet_packet_writer_config"}

func (m *UDPListenerConfig) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		if f.num == 7 {
			return msg(f, &m.QUICOptions)
		}
		// 5 downstream_socket_config: datagram size and GRO, accepted.
		refuseSet(f, &m.Refused, udpListenerRefused)
		return nil
	})
	if m.QUICOptions != nil {
		nested(&m.Refused, "quic_options", m.QUICOptions.Refused)
	}
	return err
}

// ListenerQUICOptions is envoy.config.listener.v3.QuicProtocolOptions.
type ListenerQUICOptions struct {
	QUIC    *QUICOptions `json:"quicProtocolOptions,omitempty"`
	Refused string       `json:"-"`
}

var listenerQUICRefused = map[protowire.Number]string{
	2: "idle_timeout", 3: "crypto_handshake_timeout", 6: "crypto_stream_config", 7: "proof_source_config",
	8: "connection_id_generator_config", 9: "server_preferred_address_config", 11: "connection_debug_visitor_config",
	12: "save_cmsg_config", 13: "reject_new_connections",
	// Accepted: packets_to_read_to_connection_count_ratio and
	// max_sessions_per_event_loop (reading batches),
	// send_disable_active_migration (the proxy never migrates).
}

func (m *ListenerQUICOptions) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.QUIC)
		case 4: // enabled: a RuntimeFeatureFlag whose default_value false turns QUIC off
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			var on *bool
			if err := fields(f.b, func(g field) error {
				if g.num == 1 {
					return g.boolValue(&on)
				}
				return nil
			}); err != nil {
				return err
			}
			if on != nil && !*on && m.Refused == "" {
				m.Refused = "enabled false"
			}
			return nil
		}
		refuseSet(f, &m.Refused, listenerQUICRefused)
		return nil
	})
	if m.QUIC != nil {
		nested(&m.Refused, "quic_protocol_options", m.QUIC.Refused)
	}
	return err
}

// nested records a refusal found in the field named name, with its path.
func nested(refused *string, name, inner string) {
	if *refused == "" && inner != "" {
		*refused = name + "." + inner
	}
}
