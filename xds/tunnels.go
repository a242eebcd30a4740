package xds

import (
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// TCP services ride in HTTP CONNECT streams between proxies, Envoy's own
// shape for it (Istio's HBONE): the caller's proxy listens on a loopback
// port per upstream with a tcp_proxy whose tunneling_config opens a CONNECT
// stream on the service's cluster (HTTP/3 over QUIC between built-in
// sidecars, else HTTP/2 over TLS), and the service's proxy terminates the
// CONNECT on its inbound listeners (upgrade_configs CONNECT, a
// connect_matcher route with connect_config) and sends the bytes to the
// app's TCP port. mTLS, the RBAC filter (by principal) and outlier
// detection apply as they do to HTTP.

// upgradeConnect is the upgrade type of CONNECT.
const upgradeConnect = "CONNECT"

// tunnelIdleTimeout ends a tunnel that carried nothing either way for
// this long, tcp_proxy's own default: a pooled database connection may
// sit idle for minutes, so the connection manager's 5-minute stream idle
// timeout must not apply to it.
const tunnelIdleTimeout = time.Hour

// UpstreamListenerName is the name of the listener for the upstream
// service name in namespace ns.
func UpstreamListenerName(ns, name string) string { return "upstream|" + ClusterName(ns, name) }

// TunnelAuthority is the :authority of the CONNECT requests that carry
// connections to service name in namespace ns.
func TunnelAuthority(ns, name string) string { return ClusterName(ns, name) }

// upstreamListener listens on loopback at the upstream's port and carries
// each connection to the service in a CONNECT stream on its cluster. The
// listener is there whatever the service's state: while the service is
// not in the mesh (or not reachable) the cluster is missing and
// connections are closed at once, as Envoy does; one that is not a TCP
// service refuses the CONNECT (403: it takes none), which is final.
func (b *builder) upstreamListener(u Upstream) *listener.Listener {
	ns := u.Namespace
	if ns == "" {
		ns = b.proxy.Namespace
	}
	name := UpstreamListenerName(ns, u.Service)
	// A connection is tried on another instance when one fails to take it
	// (refused, reset, 5xx) as often as the service's policy retries a
	// request; a refusal by its rules is final.
	attempts := DefaultPolicy.Retries + 1
	tp := &tcpproxyv3.TcpProxy{
		StatPrefix:       name,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: ClusterName(ns, u.Service)},
		TunnelingConfig:  &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: TunnelAuthority(ns, u.Service)},
	}
	if s := b.service(ns, u.Service); s != nil {
		attempts = s.Policy.Retries + 1
		// A split: each connection goes to one of the versions with a
		// share (the shared resources hold their clusters; a share of 0
		// is left out, as a TCP proxy's weights must be at least 1).
		if vs := s.activeVersions(); len(vs) > 0 {
			wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
			for _, v := range vs {
				wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
					Name: VersionClusterName(ns, u.Service, v.Version), Weight: v.Weight,
				})
			}
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
		}
	}
	tp.MaxConnectAttempts = u32(attempts)
	return &listener.Listener{
		Name:             name,
		Address:          socketAddress("127.0.0.1", u.Port, false),
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name:       wellknown.TCPProxy,
			ConfigType: &listener.Filter_TypedConfig{TypedConfig: toAny(tp)},
		}}}},
	}
}

// service is the mesh's service name of namespace ns, nil if it has none.
func (b *builder) service(ns, name string) *Service {
	for i := range b.mesh.Services {
		if s := &b.mesh.Services[i]; s.Name == name && s.Namespace == ns {
			return s
		}
	}
	return nil
}

// connectUpgrade lets a connection manager take CONNECT requests.
func connectUpgrade() []*hcm.HttpConnectionManager_UpgradeConfig {
	return []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: upgradeConnect}}
}

// connectRoute terminates CONNECT requests: their stream's bytes go to
// the app's TCP port.
func connectRoute() *route.Route {
	return &route.Route{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_ConnectMatcher_{ConnectMatcher: &route.RouteMatch_ConnectMatcher{}}},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: AppCluster},
			Timeout:          duration(0),
			IdleTimeout:      duration(tunnelIdleTimeout),
			UpgradeConfigs: []*route.RouteAction_UpgradeConfig{{
				UpgradeType:   upgradeConnect,
				ConnectConfig: &route.RouteAction_UpgradeConfig_ConnectConfig{},
			}},
		}},
	}
}
