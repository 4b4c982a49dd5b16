//go:build tools

// Package traefik anchors the Traefik command the test rig builds (see ../build_gateway.sh), so `go mod tidy`
// keeps exactly its dependencies.
package traefik

import (
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)
