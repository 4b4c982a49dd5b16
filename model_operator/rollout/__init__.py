"""The rollout state machine: pure functions, no Kubernetes or HTTP imports."""
