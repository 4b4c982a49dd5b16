// Command etcd is etcd's own main (go.etcd.io/etcd/v3's main.go), built here so the rig's etcd is the
// release the Kubernetes version under test is developed against (pinned as ETCD_VERSION in
// ../../../versions.env), and shares the compiled gRPC, etcd API and client packages with kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
