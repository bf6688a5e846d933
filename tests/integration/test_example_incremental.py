"""example_agentchat_incremental under real Airflow (``airflow dags test``) against the dev server."""

from __future__ import annotations

import json
from pathlib import Path


def test_the_second_pass_sends_only_the_changed_rows(run_dag, devserver):
    devserver.reset()
    x = run_dag("example_agentchat_incremental")
    result = x[("compare", -1, "return_value")]
    assert result["first"] == {
        "items": 1000,
        "sent": 1000,
        "cached": 0,
        "paid_tokens": result["first"]["paid_tokens"],
        "forecast_items": 1000,
    }
    assert result["second"]["sent"] == 10 and result["second"]["cached"] == 990
    assert result["second"]["forecast_items"] == 10 and result["second"]["items"] == 1000
    assert 0 < result["second"]["paid_tokens"] < result["first"]["paid_tokens"] / 50
    assert devserver.stats(timestamps=False)["total"] == 1010
    assert "Forecast: 1000 items to send" in x["_log"] and "Forecast: 10 items to send" in x["_log"]
    summary = x[("second_pass", -1, "return_value")]
    lines = [json.loads(line) for line in Path(summary["output_path"].removeprefix("file://")).read_text().splitlines()]
    assert len(lines) == 1000 and sum(1 for line in lines if line.get("cached")) == 990
