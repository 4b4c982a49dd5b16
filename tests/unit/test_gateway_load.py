"""What a transition cost, as the e2e suite counts it at the gateway (pure)."""

from __future__ import annotations

from tests.support.gateway_load import Sample, Segment


def test_failed_requests_are_connection_errors_and_non_2xx_not_given_by_a_faulty_version() -> None:
    samples = [
        Sample(0.0, 200, "1.0.0"),
        Sample(0.1, 0, None, "ConnectError: refused"),
        Sample(0.2, 502, None),
        Sample(0.3, 500, "3.0.0"),  # the faulty version's own error
        Sample(0.4, 500, "1.0.0"),
        Sample(0.5, 200, "3.0.0"),
    ]
    segment = Segment("rollback", samples, faulty_versions={"3.0.0"})
    summary = segment.summary()
    assert summary["requests"] == 6 and summary["failed_requests"] == 3
    assert summary["versions"] == {"1.0.0": 2, "none": 2, "3.0.0": 2}
    assert segment.first("3.0.0") == samples[3] and segment.last("3.0.0") == samples[5]
    assert Segment("promotion", samples).summary()["failed_requests"] == 4
