"""Incremental batch prompting: the same 1,000 rows twice, 10 of them changed; the second pass pays for 10.

::

    make_rows -> first_pass (forecast, then 1,000 requests) -> second_pass (forecast, then 10) -> compare

Both passes share a response cache (``cache_path``): an item whose request, endpoint and output schema were
answered before gets that answer without a request (``"cached": true`` on its line, zero tokens paid now). The
forecast (``forecast="log"``) is logged before each pass sends anything: the first expects 1,000 requests, the
second 10, with their tokens and cost.

The cache lives under the run's folder by default, so every run of this DAG shows the first pass paying in full.
Point ``params.cache_path`` at a fixed location (e.g. ``s3://bucket/agentchat-cache``) to share it across runs,
as a scheduled DAG would: then an unchanged rerun sends nothing at all.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_agentchat.operators.batch import AgentChatBatchOperator

_DEFAULT_BASE = "file://" + os.path.join(
    os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir(), "agentchat-incremental"
)

with DAG(
    dag_id="example_agentchat_incremental",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={
        "rows": Param(1000, type="integer", minimum=1, description="rows in each pass"),
        "changed": Param(10, type="integer", minimum=0, description="rows edited before the second pass"),
        "base_path": Param(_DEFAULT_BASE, type="string", description="where rows and results go"),
        "cache_path": Param(None, type=["null", "string"], description="the response cache (default: per run)"),
    },
    tags=["agentchat", "example", "batch"],
):

    @task
    def make_rows(params: dict, run_id: str) -> dict:
        """Yesterday's rows and today's: the same product descriptions, with ``changed`` of them edited."""
        import json
        import re

        from airflow.sdk import ObjectStoragePath

        folder = ObjectStoragePath(params["base_path"]) / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
        if folder.protocol == "file":
            folder.mkdir(parents=True, exist_ok=True)
        step = max(1, params["rows"] // max(1, params["changed"])) if params["changed"] else 0
        edited = set(range(0, params["rows"], step)[: params["changed"]]) if step else set()
        paths = {}
        for name in ("before", "after"):
            path = folder / f"{name}.jsonl"
            with path.open("wb") as handle:
                for i in range(params["rows"]):
                    text = f"Product {i}: a {['red', 'blue', 'green'][i % 3]} mug, {250 + i % 7 * 50} ml"
                    if name == "after" and i in edited:
                        text += ", now dishwasher safe"
                    row = {"id": f"product-{i:05d}", "prompt": f"Write a one-line ad for: {text}", "context": {"i": i}}
                    handle.write((json.dumps(row) + "\n").encode())
            paths[name] = str(path)
        paths["cache"] = params["cache_path"] or str(folder / "cache")
        return paths

    rows = make_rows()
    common = {
        "system_prompt": "You write one-line product ads.",
        "temperature": 0.0,  # deterministic: only such requests are cached (see docs/incremental.md)
        "max_tokens": 32,
        "max_concurrency": 16,
        "cache_path": "{{ ti.xcom_pull('make_rows')['cache'] }}",
        "forecast": "log",
    }
    first = AgentChatBatchOperator(
        task_id="first_pass",
        input_path="{{ ti.xcom_pull('make_rows')['before'] }}",
        **common,
    )
    second = AgentChatBatchOperator(
        task_id="second_pass",
        input_path="{{ ti.xcom_pull('make_rows')['after'] }}",
        **common,
    )

    @task
    def compare(first: dict, second: dict) -> dict:
        """What each pass sent and paid, next to what its forecast said."""
        return {
            name: {
                "items": summary["total"],
                "sent": summary["sent"],
                "cached": summary["cached"],
                "paid_tokens": summary["run_usage"]["total_tokens"],
                "forecast_items": summary["forecast"]["items"],
            }
            for name, summary in (("first", first), ("second", second))
        }

    rows >> first >> second
    compare(first.output, second.output)
