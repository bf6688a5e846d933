"""The example DAGs whose agents use tools, output schemas, failover and common.ai, under real Airflow
(``airflow dags test``) against the dev server. A file of their own so xdist runs them beside the other examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tools_round_trip(run_dag):
    x = run_dag("example_agentchat_tools")
    plan = x[("plan", -1, "return_value")]
    (call,) = plan["tool_calls"]
    assert call["function"]["name"] == "count_orders"
    conversation = x[("run_tools", -1, "return_value")]
    assert conversation[-1]["role"] == "tool" and conversation[-1]["tool_call_id"] == call["id"]
    final = x[("answer", -1, "return_value")]
    assert final.startswith("Tool results: count_orders=") and '"orders"' in final
    assert x[("answer", -1, "response")]["choices"][0]["finish_reason"] == "stop"


def test_triage_with_an_output_schema(run_dag):
    import sys

    sys.path.insert(0, str(ROOT / "dags"))
    from example_agentchat_triage import URGENCY, Triage

    x = run_dag("example_agentchat_triage")
    summary = x[("triage", -1, "return_value")]
    assert summary["total"] == 8 and summary["invalid_output"] == 1 and summary["succeeded"] == 7
    from airflow.sdk import ObjectStoragePath

    lines = [json.loads(line) for line in ObjectStoragePath(summary["output_path"]).read_text().splitlines()]
    outputs = [line["output"] for line in lines if line["status"] == "ok"]
    assert [Triage.model_validate(o).model_dump(mode="json") for o in outputs] == outputs
    report = x[("aggregate", -1, "return_value")]
    assert report["triaged"] == 7 and report["invalid_output"] == 1
    assert sum(report["by_urgency"].values()) == sum(report["by_category"].values()) == 7
    assert report["worst_urgency"] == max((o["urgency"] for o in outputs), key=URGENCY.index)
    chosen = {"critical": "page_on_call", "high": "page_on_call", "medium": "notify_team"}.get(
        report["worst_urgency"], "daily_digest"
    )
    ran = {t for t in ("page_on_call", "notify_team", "daily_digest") if (t, -1, "return_value") in x}
    assert ran == {chosen}


def test_support_agent_runs_its_tools_validates_the_reply_and_sends_it(run_dag, airflow_db):
    """Review off (``airflow dags test`` would wait for a person forever); test_approval.py covers it."""
    x = run_dag("example_agentchat_support", conf={"require_approval": False})
    trace = x[("draft_reply", -1, "tool_trace")]
    assert [entry["name"] for entry in trace] == ["lookup_order"]  # the dev server calls the first tool once
    assert json.loads(trace[0]["result"])["found"] is False
    reply = x[("draft_reply", -1, "return_value")]
    assert reply["status"] in ("processing", "shipped", "delivered", "not_found") and reply["reply"]
    assert x[("draft_reply", -1, "usage")]["total_tokens"] > x[("draft_reply", -1, "response")]["usage"]["total_tokens"]
    sent = x[("send_reply", -1, "return_value")]
    assert sent["sent_to"] == "Ada Lovelace" and sent["status"] == reply["status"]
    last = json.loads(Path(sent["outbox"]).read_text().splitlines()[-1])
    assert last == {"to": "Ada Lovelace", **reply}


def test_common_ai_agent_consults_the_do_agent(run_dag):
    pytest.importorskip("airflow.providers.common.ai.toolsets", reason="common.ai is not installed (Python 3.10)")
    x = run_dag("example_agentchat_common_ai")
    result = x[("consult_support_agent", -1, "return_value")]
    assert result["tool_answer"] == "Echo: How do refunds work?"
    assert "Echo: " in result["output"]  # TestModel answers with what the DO agent said


def test_failover_from_a_failing_primary(run_dag):
    """The dev server is the fallback; the primary is a scripted server that answers 503 to every attempt."""
    from scripted_server import ScriptedServer

    primary = ScriptedServer().start()
    try:
        primary.default = (503, {"content-type": "application/json"}, b'{"error": {"message": "down"}}')
        conn = {"conn_type": "agentchat", "host": primary.url, "password": "k", "extra": {"max_retries": 1}}
        x = run_dag("example_agentchat_failover", env={"AIRFLOW_CONN_AGENTCHAT_PRIMARY": json.dumps(conn)})
    finally:
        primary.stop()
    assert x[("ask", -1, "return_value")] == "Echo: Summarise yesterday's failed loads in one line."
    assert x[("ask", -1, "response")]["conn_id"] == "agentchat_default"
    assert x[("ask", -1, "usage")]["conn_id"] == "agentchat_default"
    summary = x[("label_tickets", -1, "return_value")]
    assert summary["succeeded"] == 6 and summary["connections"]["agentchat_default"]["answers"] == 6
    lines = [json.loads(line) for line in Path(summary["output_path"].removeprefix("file://")).read_text().splitlines()]
    assert {line["conn_id"] for line in lines} == {"agentchat_default"}
    # The task's request tried the primary twice (its own retry), and so did the batch's first two items;
    # then the primary's breaker opened (breaker_failures=2) and the other four items went straight on.
    assert len(primary.requests) == 2 + 2 * 2
