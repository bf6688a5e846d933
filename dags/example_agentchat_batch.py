"""A scheduled, sharded batch: generate prompts, split them, ask the agent from mapped tasks, summarise.

::

    generate_dataset -> make_shards -> ask_agent[0..n) (AgentChatBatchOperator, one shard each) -> summarise

Each mapped ``ask_agent`` task reads one shard and writes ``<shard>.results.jsonl`` beside it, so an Airflow
retry of one shard resumes that shard only. ``summarise`` adds up the per-shard summaries (the XCom
``return_value`` of each mapped task) and reads the result files back.

Files go under ``params.base_path`` (any ``ObjectStoragePath`` URI, e.g. ``s3://bucket/agentchat``; by default
``$AGENTCHAT_EXAMPLE_OUTPUT_DIR`` or the temp dir), in a folder per DAG run, read and written with the
credentials of the connection ``params.storage_conn_id`` (e.g. an ``aws`` connection; none for local files).
The agent's limit, ``requests_per_minute``, is shared by the mapped shards. ``docs/scale-out.md`` runs this DAG
on Celery workers with S3 storage.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_agentchat.operators.batch import AgentChatBatchOperator

_DEFAULT_BASE = "file://" + os.path.join(
    os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir(), "agentchat-batch"
)

with DAG(
    dag_id="example_agentchat_batch",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    params={
        "items": Param(240, type="integer", minimum=1, description="prompts to generate"),
        "shards": Param(3, type="integer", minimum=1, description="mapped batch tasks"),
        "base_path": Param(_DEFAULT_BASE, type="string", description="where inputs and results go"),
        "storage_conn_id": Param(None, type=["null", "string"], description="connection for base_path"),
        "requests_per_minute": Param(6000, type="integer", minimum=1, description="the agent's request limit"),
    },
    tags=["agentchat", "example", "batch"],
):

    @task
    def generate_dataset(params: dict, run_id: str) -> str:
        """Write the day's prompts as JSONL: one support ticket per line, with an id and context to join on."""
        import json
        import re

        from airflow.sdk import ObjectStoragePath

        base = ObjectStoragePath(params["base_path"], conn_id=params["storage_conn_id"])
        folder = base / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
        if folder.protocol == "file":
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tickets.jsonl"
        topics = ["billing", "login", "latency", "export", "permissions", "webhooks"]
        with path.open("wb") as handle:
            for i in range(params["items"]):
                topic = topics[i % len(topics)]
                line = {
                    "id": f"ticket-{i:05d}",
                    "prompt": f"Ticket {i}: customer reports a problem with {topic}. Label it in one word.",
                    "context": {"ticket": i, "topic": topic},
                }
                handle.write((json.dumps(line) + "\n").encode())
        return str(path)

    @task
    def make_shards(input_path: str, params: dict) -> list[str]:
        """One shard per mapped task; deterministic, so a retried split writes the same shards.

        The shard URIs carry the storage connection (``s3://conn_id@bucket/...``), and so do the result paths.
        """
        from airflow_agentchat.batch import split_jsonl

        return split_jsonl(input_path, num_shards=params["shards"], storage_conn_id=params["storage_conn_id"])

    answers = AgentChatBatchOperator.partial(
        task_id="ask_agent",
        system_prompt="You label support tickets with a single word.",
        max_tokens=16,
        temperature=0.0,
        max_concurrency=16,
        # The agent's limit: each of the shards running at once paces at its share.
        requests_per_minute="{{ params.requests_per_minute }}",
        storage_conn_id="{{ params.storage_conn_id or '' }}",
        max_failed_fraction=0.01,
        retries=2,
    ).expand(input_path=make_shards(generate_dataset()))

    @task
    def summarise(summaries: list[dict]) -> dict:
        """Add up the shard summaries and read the result files back (the join a real DAG would load)."""
        import json

        from airflow.sdk import ObjectStoragePath

        totals = {"shards": 0, "total": 0, "succeeded": 0, "failed": 0, "total_tokens": 0, "lines": 0}
        by_topic: dict[str, int] = {}
        for summary in summaries:
            totals["shards"] += 1
            for key in ("total", "succeeded", "failed"):
                totals[key] += summary[key]
            totals["total_tokens"] += summary["usage"]["total_tokens"]
            with ObjectStoragePath(summary["output_path"]).open("rb") as handle:
                for raw in handle.readlines():  # Airflow 3.0 cannot iterate the handle itself
                    line = json.loads(raw)
                    totals["lines"] += 1
                    topic = (line.get("context") or {}).get("topic", "?")
                    by_topic[topic] = by_topic.get(topic, 0) + (line["status"] == "ok")
        return {**totals, "answered_by_topic": dict(sorted(by_topic.items()))}

    summarise(answers.output)
