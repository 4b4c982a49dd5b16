"""The ``modelrollout`` command line: the one CLI users learn (train, serve, and rollout control)."""

__all__: list[str] = []
