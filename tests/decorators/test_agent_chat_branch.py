"""``@task.agent_chat_branch`` (decorators/agent_chat_branch.py) in this process against a scripted server: the
function builds the prompt and the agent's choice, limited to ``branches``, is the task's result."""

from __future__ import annotations

import json

import pytest
from fakes import FakeTI

from airflow_agentchat.decorators.agent_chat_branch import _AgentChatBranchDecoratedOperator


def choose(branch: str) -> tuple[int, dict, bytes]:
    call = {"id": "c1", "type": "function", "function": {"name": "choose_branch", "arguments": json.dumps(branch)}}
    message = {"role": "assistant", "tool_calls": [call]}
    body = {
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def test_the_function_builds_the_prompt_and_the_agent_picks_a_branch(scripted, make_conn):
    scripted.script(choose({"branch": "refund"}))
    operator = _AgentChatBranchDecoratedOperator(
        task_id="triage",
        python_callable=lambda ticket: f"Route this ticket: {ticket}",
        op_args=["my parcel never came"],
        agentchat_conn_id=make_conn("deco_branch", scripted.url),
        branches={"refund": "the customer wants money back", "answer": "a question"},
    )
    chosen: list = []
    operator.do_branch = lambda context, branches: chosen.append(branches) or branches  # no DAG run to skip in
    assert operator.execute({"ti": FakeTI()}) == "refund" and chosen == ["refund"]
    body = json.loads(scripted.requests[0].body)
    assert body["messages"][-1] == {"role": "user", "content": "Route this ticket: my parcel never came"}
    assert body["tools"][-1]["function"]["parameters"]["properties"]["branch"]["enum"] == ["refund", "answer"]


def test_branch_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="non-empty mapping"):
        _AgentChatBranchDecoratedOperator(task_id="t", python_callable=lambda: "x", branches={})
