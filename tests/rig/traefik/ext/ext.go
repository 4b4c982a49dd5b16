// Package ext holds the two extension points Traefik's dynamic configuration embeds (dynamic.HTTPConfiguration
// and dynamic.Router). Open-source Traefik leaves both empty; so does the test rig.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration; it adds no fields.
type HTTP struct{}

// Router is embedded in dynamic.Router; it adds no fields.
type Router struct{}
