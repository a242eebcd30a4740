package bootstrap

import (
	"errors"
	"net"
	"path"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/micromesh/micromesh/xds"
)

// EnvoyOptions describe an Envoy sidecar.
type EnvoyOptions struct {
	ControlPlane   string // host:port
	ControlPlaneID string // the control plane's SPIFFE ID, checked on connect
	NodeID         string
	Cluster        string // node.cluster: the service name
	// Metadata is the node metadata the control plane builds from (kind,
	// ports, cert_dir); CertDir also holds the files the xDS connection uses.
	Metadata  map[string]any
	CertDir   string
	AdminPort uint32 // Envoy's admin, on loopback
	// SotW makes Envoy speak state-of-the-world xDS instead of delta.
	// Delta is the default: a change sends each proxy what changed, where
	// state of the world sends it every cluster or endpoint of the type
	// again (1,000 proxies that may call 1,000 services: p99 3.8 s
	// against 0.24 s per change; docs/controlplane.md).
	SotW bool
}

// XDSCluster is the bootstrap's static cluster for the control plane.
const XDSCluster = xds.ControlPlaneCluster

// xdsCertSecret is the bootstrap's static secret for the xDS connection:
// files in CertDir, reloaded when the directory changes.
const xdsCertSecret = "xds_cert"

// Envoy builds an Envoy v3 bootstrap: ADS (delta, unless o.SotW) over mTLS
// (HTTP/2) to the control
// plane, checking its SPIFFE ID, with the node's identity and metadata; the
// proxy's listeners and clusters all come over ADS, its certificate over SDS.
func Envoy(o EnvoyOptions) (*bootstrapv3.Bootstrap, error) {
	if o.ControlPlane == "" || o.NodeID == "" || o.CertDir == "" || o.ControlPlaneID == "" {
		return nil, errors.New("bootstrap: control plane address and ID, node ID and certificate directory are required")
	}
	host, portStr, err := net.SplitHostPort(o.ControlPlane)
	if err != nil {
		return nil, err
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return nil, err
	}
	meta, err := structpb.NewStruct(o.Metadata)
	if err != nil {
		return nil, err
	}
	if o.AdminPort == 0 {
		o.AdminPort = 15000
	}
	discovery := cluster.Cluster_STRICT_DNS
	if net.ParseIP(host) != nil {
		discovery = cluster.Cluster_STATIC
	}
	ads := &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3, ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	upstreamTLS := &tlsv3.UpstreamTlsContext{
		Sni: host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: xdsCertSecret}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path.Join(o.CertDir, "bundle.pem")}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: o.ControlPlaneID}},
				}},
			}},
			AlpnProtocols: []string{"h2"},
		},
	}
	apiType := core.ApiConfigSource_DELTA_GRPC
	if o.SotW {
		apiType = core.ApiConfigSource_GRPC
	}
	return &bootstrapv3.Bootstrap{
		Node: &core.Node{Id: o.NodeID, Cluster: o.Cluster, Metadata: meta},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType:                   apiType,
				TransportApiVersion:       core.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: XDSCluster},
				}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*cluster.Cluster{{
				Name:                 XDSCluster,
				ClusterDiscoveryType: &cluster.Cluster_Type{Type: discovery},
				ConnectTimeout:       durationpb.New(5 * time.Second),
				LoadAssignment: &endpoint.ClusterLoadAssignment{
					ClusterName: XDSCluster,
					Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
						HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: &core.Address{
							Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
								Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
							}},
						}}},
					}}}},
				},
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
						UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
							ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
						}},
					}),
				},
				TransportSocket: &core.TransportSocket{
					Name:       wellknown.TransportSocketTLS,
					ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(upstreamTLS)},
				},
			}},
			Secrets: []*tlsv3.Secret{{
				Name: xdsCertSecret,
				Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path.Join(o.CertDir, "cert.pem")}},
					PrivateKey:       &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path.Join(o.CertDir, "key.pem")}},
					WatchedDirectory: &core.WatchedDirectory{Path: o.CertDir},
				}},
			}},
		},
		Admin: &bootstrapv3.Admin{Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: o.AdminPort},
		}}}},
	}, nil
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}
