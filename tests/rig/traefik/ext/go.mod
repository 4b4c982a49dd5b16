// Stand-in for Traefik's nested module github.com/traefik/traefik/dynamic/ext, which Traefik's own go.mod
// replaces with a directory of its repository; that directory is a module of its own, so it is not in the
// published traefik/v3 module and the module proxy does not serve it either.
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
