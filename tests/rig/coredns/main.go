// Command coredns is the test rig's cluster DNS (see ../build_dns.sh): CoreDNS with only the plugins the
// real node's pods need, compiled in. CoreDNS' own main imports every plugin of its plugin.cfg (cloud DNS
// SDKs, etcd, dnstap, ...); this one imports seven and tells CoreDNS their order, the order of plugin.cfg.
package main

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"       // listen on the host end of the node's veth only
	_ "github.com/coredns/coredns/plugin/cache"      // answers for the TTL, as every cluster's CoreDNS does
	_ "github.com/coredns/coredns/plugin/errors"     // log failed queries
	_ "github.com/coredns/coredns/plugin/health"     // /health: the process is up
	_ "github.com/coredns/coredns/plugin/kubernetes" // the cluster.local zone from Services and EndpointSlices
	_ "github.com/coredns/coredns/plugin/log"        // one line per query, in the rig's log
	_ "github.com/coredns/coredns/plugin/ready"      // /ready: the kubernetes plugin has synced its caches
)

// directives lists the plugins compiled in, in plugin.cfg's execution order (a Corefile's order is ignored).
var directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		log.Fatalf("coredns: %v", err)
	}
	coremain.Run()
}
