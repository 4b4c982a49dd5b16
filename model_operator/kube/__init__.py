"""The thin adapter between decisions and the Kubernetes API: manifests (pure) and the client (I/O)."""
