"""The modelrollout Kubernetes operator (kopf). Arrives with the operator-core work."""

__all__: list[str] = []
