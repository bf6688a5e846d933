"""Read rows, ask the agent once per row (dynamic task mapping), write the results.

The read and write tasks stand in for a warehouse query and a table load; the middle step is one mapped
completion task per row, so each row is retried on its own.
"""

from __future__ import annotations

import json
import os
import tempfile

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

with DAG(
    dag_id="example_agentchat_chain",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example"],
):

    @task
    def read_rows() -> list[dict]:
        """Pretend warehouse query: customer reviews to classify."""
        return [
            {"id": 1, "review": "The parcel arrived two days late but intact."},
            {"id": 2, "review": "Great quality, will order again."},
            {"id": 3, "review": "Wrong size, and the return form is confusing."},
        ]

    @task
    def to_prompts(rows: list[dict]) -> list[str]:
        return [f"Classify the sentiment of review {row['id']}: {row['review']}" for row in rows]

    rows = read_rows()
    classify = AgentChatCompletionOperator.partial(
        task_id="classify",
        system_prompt="Answer with one word: positive, negative or mixed.",
        temperature=0,
        max_tokens=50,
    ).expand(prompt=to_prompts(rows))

    @task
    def write_results(rows: list[dict], answers: list[str]) -> dict:
        """Pretend table load: one JSON line per row with the agent's label."""
        out_dir = os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir()
        os.makedirs(out_dir, exist_ok=True)  # a fresh output folder works too
        path = os.path.join(out_dir, "example_agentchat_chain.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            for row, answer in zip(rows, answers, strict=True):
                handle.write(json.dumps({"id": row["id"], "label": answer}) + "\n")
        return {"path": path, "rows": len(rows)}

    write_results(rows, classify.output)
