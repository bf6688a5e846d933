"""AgentChatBatchOperator where Airflow itself matters, under ``airflow dags test`` against the dev server:
templated prompts from XCom, mapping, and the sharded example DAG."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from airflow_agentchat.batch.items import stable_id


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ Airflow

CASES_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with DAG(dag_id="agentchat_batch_cases", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None):

        @task
        def rows() -> list:
            return [{"id": f"row-{i}", "prompt": f"xcom row {i}", "context": {"i": i}} for i in range(5)] + [
                "a bare string",
                [{"role": "user", "content": "a message list"}],
            ]

        made = rows()
        AgentChatBatchOperator(
            task_id="from_xcom_arg", prompts=made, output_path="file://{{ params.out }}/xcomarg-{{ ds_nodash }}.jsonl",
            agentchat_conn_id="agentchat_default",
        )
        AgentChatBatchOperator(
            task_id="from_jinja", prompts="{{ ti.xcom_pull(task_ids='rows') }}",
            output_path="file://{{ params.out }}/jinja-{{ ds_nodash }}.jsonl", max_tokens=64,
        ).set_upstream(made)

        @task
        def inputs() -> list:
            import json, os
            paths = []
            for shard in range(2):
                path = os.path.join("{out}", f"mapped-{shard}.jsonl")
                with open(path, "w") as handle:
                    for i in range(3):
                        handle.write(json.dumps({"id": f"m{shard}-{i}", "prompt": f"mapped {shard} {i}"}) + "\\n")
                paths.append("file://" + path)
            return paths

        AgentChatBatchOperator.partial(task_id="mapped").expand(input_path=inputs())
    """
)


@pytest.fixture(scope="module")
def cases_run(run_dag, tmp_path_factory):
    from suite import DAGS_FOLDER

    out = tmp_path_factory.mktemp("batch-cases")
    (DAGS_FOLDER / "agentchat_batch_cases.py").write_text(
        CASES_DAG.replace('"{out}"', repr(str(out))).replace("{{ params.out }}", str(out))
    )
    return run_dag("agentchat_batch_cases", "2026-02-03"), out


def test_templated_prompts_from_xcom_under_airflow(cases_run, canary_key):
    x, out = cases_run
    for task_id, name in (("from_xcom_arg", "xcomarg"), ("from_jinja", "jinja")):
        summary = x[(task_id, -1, "return_value")]
        assert summary["total"] == summary["succeeded"] == 7, summary
        lines = lines_of(out / f"{name}-20260203.jsonl")
        by_id = {line["id"]: line for line in lines}
        assert (
            len(lines) == 7 and by_id["row-3"]["text"] == "Echo: xcom row 3" and by_id["row-3"]["context"] == {"i": 3}
        )
        assert by_id[stable_id("a bare string")]["text"] == "Echo: a bare string"
    assert canary_key not in x["_log"]


def test_mapped_tasks_each_write_their_own_output(cases_run):
    x, out = cases_run
    for shard in range(2):
        summary = x[("mapped", shard, "return_value")]
        assert summary["output_path"] == f"file://{out}/mapped-{shard}.results.jsonl"
        assert summary["succeeded"] == 3
        assert {line["id"] for line in lines_of(out / f"mapped-{shard}.results.jsonl")} == {
            f"m{shard}-{i}" for i in range(3)
        }


def test_example_dag_runs_sharded_and_summarises(run_dag, canary_key):
    x = run_dag("example_agentchat_batch")
    shards = x[("make_shards", -1, "return_value")]
    assert len(shards) == 3
    summaries = [x[("ask_agent", i, "return_value")] for i in range(3)]
    assert sum(s["total"] for s in summaries) == 240 and all(s["failed"] == 0 for s in summaries)
    result = x[("summarise", -1, "return_value")]
    assert result["shards"] == 3 and result["succeeded"] == result["lines"] == 240
    assert sum(result["answered_by_topic"].values()) == 240
    assert canary_key not in x["_log"]
