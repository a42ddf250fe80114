// Command coredns is upstream CoreDNS (github.com/coredns/coredns) built from the Go module proxy
// for the local cluster DNS in deploy/local, with only the plugins its Corefile uses: bind, errors,
// health, ready, kubernetes and cache. Everything else is upstream's coremain, as in upstream's main.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
