// Command etcd is upstream etcd (go.etcd.io/etcd/server/v3) built from the Go module proxy for the
// local control plane in deploy/local. It only forwards to etcdmain, exactly like upstream's main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
