"""Metrics units (metrics.py): the error kind a metric is tagged with. The metrics reaching StatsD from a real run
are in integration/test_metrics.py."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import RateLimitError


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RateLimitError(429, "slow down"), "rate_limited"),
        (type("Custom", (Exception,), {"kind": "quota_exceeded"})(), "quota_exceeded"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "invalid_request"),
        (KeyError("x"), "internal_error"),
    ],
)
def test_error_kind_reads_kind_with_or_without_the_attribute(error, kind):
    from airflow_agentchat.metrics import error_kind

    assert error_kind(error) == kind
