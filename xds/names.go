package xds

// Resource names. A node's snapshot holds only its own resources, so names
// need only be unique per node.
const (
	// OutboundListener takes the app's calls on loopback (sidecars).
	OutboundListener = "outbound"
	// InboundListener takes mTLS traffic from other proxies.
	InboundListener = "inbound"
	// OutboundRoute routes by authority to one virtual host per reachable service.
	OutboundRoute = "outbound"
	// InboundRoute sends inbound traffic to the local app.
	InboundRoute = "inbound"
	// AppCluster is the local app on loopback.
	AppCluster = "inbound|app"
	// CertSecret is the proxy's certificate (SDS).
	CertSecret = "default"
	// RootSecret is the trust bundle (SDS).
	RootSecret = "ROOTCA"
	// CertProviderInstance is the certificate-provider instance a proxyless
	// gRPC client's bootstrap defines (file_watcher).
	CertProviderInstance = "default"
)

// ClusterName returns the cluster (and EDS resource) name of a service.
func ClusterName(ns, name string) string { return name + "." + ns }

// VersionClusterName returns the cluster (and EDS resource) name of the
// instances of one version of a service, which its split sends to.
func VersionClusterName(ns, name, version string) string {
	return ClusterName(ns, name) + "|" + version
}

// hostNames are the authorities a caller in namespace callerNS may use for
// service name in namespace ns: "name.ns" always, "name" within one's own
// namespace.
func hostNames(callerNS, ns, name string) []string {
	full := name + "." + ns
	if callerNS == ns {
		return []string{name, full}
	}
	return []string{full}
}
