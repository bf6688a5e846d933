"""AgentChatBranchOperator in this process against a scripted server: the schema is an enum of the task ids, the
agent can only name a branch, bad arguments fail at parse time."""

from __future__ import annotations

import json

import pytest
from fakes import FakeTI

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.branch import AgentChatBranchOperator, branch_schema


def test_branch_schema_is_an_enum_of_the_task_ids():
    one = branch_schema({"a": "when A", "b": "when B"}, allow_multiple=False)
    assert one["properties"]["branch"]["enum"] == ["a", "b"] and one["required"] == ["branch"]
    assert "- a: when A" in one["properties"]["branch"]["description"]
    many = branch_schema({"a": "x"}, allow_multiple=True)
    assert many["properties"]["branches"]["items"]["enum"] == ["a"] and many["properties"]["branches"]["minItems"] == 1


def test_the_agent_can_only_name_a_branch(scripted, make_conn):
    """A task id outside the branches is invalid and goes back to the agent; the request carries the enum."""

    def call(args: dict) -> tuple[int, dict, bytes]:
        message = {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "choose_branch", "arguments": json.dumps(args)}}
            ],
        }
        body = {
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
        return 200, {"content-type": "application/json"}, json.dumps(body).encode()

    scripted.script(call({"branch": "drop_table"}), call({"branch": "b", "reason": "because"}))
    operator = AgentChatBranchOperator(
        task_id="t", agentchat_conn_id=make_conn("branch_unit", scripted.url), prompt="x", branches={"a": "A", "b": "B"}
    )
    ti, chosen = FakeTI(), []
    operator.do_branch = lambda context, branches: chosen.append(branches) or branches  # no DAG run to skip in
    result = operator.execute({"ti": ti})
    assert result == "b" and chosen == ["b"]
    assert ti.xcom["choice"] == {"branch": "b", "reason": "because"}
    assert ti.xcom["usage"]["total_tokens"] == 14
    first = json.loads(scripted.requests[0].body)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "choose_branch"}}
    assert first["tools"][-1]["function"]["parameters"]["properties"]["branch"]["enum"] == ["a", "b"]
    second = json.loads(scripted.requests[1].body)["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "c1" and "branch" in second[-1]["content"]


def test_branches_must_be_downstream_before_any_request(scripted, make_conn):
    import pendulum
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    scripted.script()
    with DAG("branch_check", start_date=pendulum.datetime(2026, 1, 1), schedule=None):
        pick = AgentChatBranchOperator(
            task_id="pick",
            agentchat_conn_id=make_conn("branch_dag", scripted.url),
            prompt="x",
            branches={"a": "A", "b": "B"},
        )
        pick >> BaseOperator(task_id="a")
    with pytest.raises(InvalidRequestError, match="branches: b not downstream of pick"):
        pick.execute({})
    assert scripted.requests == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branches": {}}, "non-empty mapping"),
        ({"branches": {"a": 1}}, "descriptions"),
        ({"branches": {"a": "A"}, "output_schema": {"type": "object"}}, "builds its output schema"),
    ],
)
def test_bad_branch_arguments_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgentChatBranchOperator(task_id="t", prompt="x", **kwargs)
