//go:build tools

// Package prometheus anchors the Prometheus server the e2e rig builds (see ../build.sh): Prometheus with
// Kubernetes service discovery, which Debian's package is built without. Its own module, so Prometheus'
// client-go does not have to agree with the control plane's pins in ../go.
package prometheus

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
