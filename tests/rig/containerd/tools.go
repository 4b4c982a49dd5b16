//go:build tools

// Package node anchors the container runtime the rig's real node runs, so `go mod tidy` keeps its
// dependencies and one `go build` compiles containerd, its runc shim and ctr together. It lives in its own
// module: containerd's dependency versions must not move the Kubernetes pins of ../go.
package node

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
