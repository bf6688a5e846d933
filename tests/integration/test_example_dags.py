"""Every example DAG parses cleanly and runs under real Airflow against the dev server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_dags_folder_has_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {d for d in bag.dag_ids if d.startswith("example_agentchat_")} >= {
        "example_agentchat_basic",
        "example_agentchat_chain",
        "example_agentchat_scheduled",
        "example_agentchat_tools",
        "example_agentchat_stream",
    }


def test_basic(run_dag):
    x = run_dag("example_agentchat_basic")
    answer = x[("ask", -1, "return_value")]
    assert answer == "Echo: Name three checks worth running on a daily sales table."
    assert x[("ask", -1, "usage")]["total_tokens"] > 0
    assert x[("ask", -1, "response")]["choices"][0]["message"]["content"] == answer
    assert x[("use_answer", -1, "return_value")] == {"answer": answer, "words": len(answer.split())}


def test_chain(run_dag, airflow_db):
    x = run_dag("example_agentchat_chain")
    rows = x[("read_rows", -1, "return_value")]
    answers = [x[("classify", i, "return_value")] for i in range(len(rows))]
    assert answers == [f"Echo: Classify the sentiment of review {r['id']}: {r['review']}" for r in rows]
    assert all(x[("classify", i, "usage")]["total_tokens"] > 0 for i in range(len(rows)))
    result = x[("write_results", -1, "return_value")]
    lines = [json.loads(line) for line in Path(result["path"]).read_text().splitlines()]
    assert lines == [{"id": r["id"], "label": a} for r, a in zip(rows, answers, strict=True)]


def test_scheduled_renders_dates_and_params(run_dag):
    x = run_dag("example_agentchat_scheduled", "2026-05-06")
    assert x[("daily_brief", -1, "return_value")] == (
        "Echo: Write the stand-up brief for data-platform for 2026-05-06 in at most 3 items."
    )
    assert x[("daily_brief", -1, "usage")]["prompt_tokens"] > 20  # the templated system/history messages count


def test_stream(run_dag):
    x = run_dag("example_agentchat_stream")
    assert x[("stream_story", -1, "return_value")] == "Echo: Tell a four-line story about a pipeline that never failed."
    assert x[("stream_story", -1, "usage")]["completion_tokens"] > 0


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (ROOT / "dags").glob("example_*.py")))
def test_every_example_dag_has_a_test(dag_file):
    dag_id = dag_file.removesuffix(".py")
    covered = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))  # the integration tests
    assert f'"{dag_id}"' in covered, f"{dag_id} is not run by any test"
