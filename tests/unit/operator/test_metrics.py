from __future__ import annotations

from prometheus_client import generate_latest

from model_operator.metrics import OperatorMetrics
from model_operator.spec import Phase


def test_series_exist_at_zero_before_the_first_rollback() -> None:
    """``increase()`` cannot see a series that is born at 1, so dashboards and alerts need the zero."""
    metrics = OperatorMetrics()
    metrics.ensure_series("models", "iris")
    metrics.set_phase("models", "iris", Phase.PROGRESSING)
    text = generate_latest(metrics.registry).decode()
    assert 'modelrollout_transitions_total{name="iris",namespace="models",phase="RolledBack"} 0.0' in text
    assert 'modelrollout_rollback_duration_seconds_count{name="iris",namespace="models"} 0.0' in text
    assert 'modelrollout_phase{name="iris",namespace="models",phase="Progressing"} 1.0' in text
