"""OpenLineage: the COMPLETE events of ``airflow dags test`` (file transport) carry the batch's datasets and
the agent chat run facet, and never the key or a part/temporary file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from suite import AIRFLOW_HOME, CANARY_KEY

from airflow_agentchat.lineage import host_of

DAG_ID = "agentchat_ops_cases"
PROMPTS = [f"lineage item {i}" for i in range(6)]


def events_of(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_complete_events_carry_datasets_and_the_run_facet(run_dag, devserver, tmp_path):
    devserver.reset()
    folder = AIRFLOW_HOME / "ops_cases"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "input.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    log = tmp_path / "ol.jsonl"
    env = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "agentchat-tests",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
    }
    xcoms = run_dag(DAG_ID, env=env)
    events = events_of(log)
    text = log.read_text()
    assert CANARY_KEY not in text
    complete = {
        e["job"]["name"].rsplit(".", 1)[-1]: e
        for e in events
        if e.get("eventType") == "COMPLETE" and e["job"]["name"].startswith(f"{DAG_ID}.")
    }
    assert set(complete) >= {"single", "batch"}, [(e.get("eventType"), e["job"]["name"]) for e in events]

    batch = complete["batch"]
    assert [(d["namespace"], d["name"]) for d in batch["inputs"]] == [("file", str(folder / "input.jsonl"))]
    assert [(d["namespace"], d["name"]) for d in batch["outputs"]] == [("file", str(folder / "output.jsonl"))]
    assert ".parts" not in text and ".tmp" not in text  # never a part or the compose temp file
    facet = batch["run"]["facets"]["agentChat"]
    usage = xcoms[("batch", -1, "usage")]
    assert facet["endpointHost"] == host_of(devserver.url)
    assert facet["requests"] == len(PROMPTS) and facet["errors"] == 0
    assert facet["model"] == "agent"  # the task names none: the placeholder every request carried
    assert facet["totalTokens"] == usage["total_tokens"] > 0
    assert facet["promptTokens"] == usage["prompt_tokens"]
    assert facet["cacheReadInputTokens"] == usage["cache_read_input_tokens"] > 0  # the DAG caches its prefix
    assert facet["cacheCreatedInputTokens"] == usage["cache_created_input_tokens"] > 0

    single = complete["single"]
    facet = single["run"]["facets"]["agentChat"]
    assert single["inputs"] == [] and single["outputs"] == []
    assert facet["requests"] == 1 and facet["model"]
    assert facet["totalTokens"] == xcoms[("single", -1, "usage")]["total_tokens"]
