package controlplane

import (
	"fmt"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/upstreams"
	"github.com/micromesh/micromesh/xds"
)

// Node metadata keys (node.metadata, a Struct) that describe a proxy.
const (
	MetaKind         = "kind"          // builtin | envoy | proxyless
	MetaInboundPort  = "inbound_port"  // number
	MetaOutboundPort = "outbound_port" // number
	MetaAppPort      = "app_port"      // number
	MetaAppProtocol  = "app_protocol"  // grpc | http
	MetaCertDir      = "cert_dir"      // where cert.pem, key.pem, bundle.pem are
	// MetaUpstreams lists the TCP services the app reaches through
	// loopback ports of its proxy: "db=15432,cache.shop=16379".
	MetaUpstreams = "upstreams"
)

// nodeKind is the node's proxy kind: its metadata says, or else its user
// agent (Envoy is envoy, a gRPC library is proxyless).
func nodeKind(n *core.Node) (string, error) {
	if k := n.GetMetadata().GetFields()[MetaKind].GetStringValue(); k != "" {
		return k, nil
	}
	switch ua := strings.ToLower(n.GetUserAgentName()); {
	case ua == "envoy":
		return xds.KindEnvoy, nil
	case strings.Contains(ua, "grpc"):
		return xds.KindProxyless, nil
	}
	return "", fmt.Errorf("node metadata %q is missing: say builtin, envoy or proxyless", MetaKind)
}

// proxyFromNode reads the proxy's description from its node. The kind
// defaults from the user agent: Envoy is envoy, a gRPC library is proxyless.
func proxyFromNode(n *core.Node, id identity.ID) (xds.Proxy, error) {
	p := xds.Proxy{NodeID: n.GetId(), Namespace: id.Namespace, Service: id.Name}
	fields := n.GetMetadata().GetFields()
	str := func(k string) string { return fields[k].GetStringValue() }
	num := func(k string) (uint32, error) {
		v, ok := fields[k]
		if !ok {
			return 0, nil
		}
		var f float64
		switch x := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			f = x.NumberValue
		case *structpb.Value_StringValue:
			if _, err := fmt.Sscanf(x.StringValue, "%g", &f); err != nil {
				return 0, fmt.Errorf("node metadata %s = %q is not a port number", k, x.StringValue)
			}
		default:
			return 0, fmt.Errorf("node metadata %s is not a port number", k)
		}
		if f < 0 || f > 65535 || f != float64(uint32(f)) {
			return 0, fmt.Errorf("node metadata %s = %v is not a port number", k, f)
		}
		return uint32(f), nil
	}
	var err error
	if p.Kind, err = nodeKind(n); err != nil {
		return p, err
	}
	if p.InboundPort, err = num(MetaInboundPort); err != nil {
		return p, err
	}
	if p.OutboundPort, err = num(MetaOutboundPort); err != nil {
		return p, err
	}
	if p.AppPort, err = num(MetaAppPort); err != nil {
		return p, err
	}
	p.AppProtocol = str(MetaAppProtocol)
	p.CertDir = str(MetaCertDir)
	us, err := upstreams.Parse(str(MetaUpstreams))
	if err != nil {
		return p, fmt.Errorf("node metadata %s: %w", MetaUpstreams, err)
	}
	for _, u := range us {
		p.Upstreams = append(p.Upstreams, xds.Upstream{Service: u.Service, Namespace: u.Namespace, Port: uint32(u.Port)})
	}
	return p, nil
}
