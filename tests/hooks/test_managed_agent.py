"""The DigitalOcean agent as a common.ai managed agent: the contract, common.ai's own consumers, error mapping.

common.ai's ``FailoverManagedAgentClient`` and ``ManagedAgentToolset`` (and pydantic-ai's offline ``TestModel``
as the calling model) drive the hook against the dev server and small scripted servers.
"""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.managed_agents.base",
    reason="common.ai (apache-airflow-providers-common-ai, Python >= 3.11) is not installed",
)

from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected
from airflow.providers.common.ai.managed_agents.base import ManagedAgentRequest
from airflow.providers.common.ai.managed_agents.failover import FailoverManagedAgentClient
from scripted_server import ScriptedServer

from airflow_agentchat.exceptions import (
    InvalidRequestError,
    NetworkTimeoutError,
    RateLimitError,
    RefusedError,
    ServerError,
)
from airflow_agentchat.hooks.managed_agent import AgentChatManagedAgentHook

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["label", "score"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error(status: int, message: str = "boom", code: str | None = None) -> tuple[int, dict, bytes]:
    body = {"error": {"message": message, "type": "error", "code": code}}
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


def _completion(text: str = "scripted answer") -> tuple[int, dict, bytes]:
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return 200, {"content-type": "application/json", "x-request-id": "req-77"}, json.dumps(body).encode()


@pytest.fixture()
def server():
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


@pytest.fixture()
def dev_agent(devserver, make_conn):
    make_conn("ma_dev", devserver.url, max_retries=0)
    return AgentChatManagedAgentHook("ma_dev").agent("support")


def test_contract_identity_and_capabilities(dev_agent):
    assert dev_agent.ref.platform == "digitalocean.gradient_agent"
    assert dev_agent.ref.name == "support"
    caps = dev_agent.capabilities
    assert (caps.structured_output, caps.usage, caps.sessions) == (True, True, False)
    with pytest.raises(ValueError, match="agent"):
        AgentChatManagedAgentHook("ma_dev").resolve_agent("  ")


def test_prompt_answer_usage_and_raw(dev_agent):
    response = dev_agent.invoke(ManagedAgentRequest(prompt="hello there"))
    assert response.text == "Echo: hello there"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 3
    assert response.raw["choices"][0]["message"]["content"] == "Echo: hello there"
    assert response.structured is None


def test_messages_as_text_parts(dev_agent):
    """``as_messages()`` sends content as a list of text parts; the request model accepts it."""
    messages = ManagedAgentRequest(prompt="parts please").as_messages()
    assert isinstance(messages[0]["content"], list)
    response = dev_agent.invoke(ManagedAgentRequest(messages=messages))
    assert response.text == "Echo: parts please"


def test_vendor_options_go_to_the_body(server, make_conn):
    make_conn("ma_rec", server.url, max_retries=0)
    server.script(_completion())
    agent = AgentChatManagedAgentHook("ma_rec").agent("rec")
    options = {
        "include_retrieval_info": True,
        "provide_citations": True,
        "temperature": 0.2,
        "system_prompt": "Be brief",
    }
    response = agent.invoke(ManagedAgentRequest(prompt="q", vendor_options=options))
    body = json.loads(server.requests[0].body)
    assert body["include_retrieval_info"] is True and body["provide_citations"] is True
    assert body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Be brief"}
    assert response.trace_ref == "req-77"


@pytest.mark.parametrize(
    ("options", "field"),
    [({"tempurature": 1}, "vendor_options.tempurature"), ({"stream": True}, "vendor_options.stream")],
)
def test_bad_vendor_options_refused_before_sending(server, make_conn, options, field):
    make_conn("ma_bad", server.url, max_retries=0)
    server.script()
    agent = AgentChatManagedAgentHook("ma_bad").agent("x")
    with pytest.raises(InvalidRequestError, match=field):
        agent.invoke(ManagedAgentRequest(prompt="q", vendor_options=options))
    assert server.requests == []


def test_output_schema_gives_structured(dev_agent):
    response = dev_agent.invoke(ManagedAgentRequest(prompt="classify", vendor_options={"output_schema": SCHEMA}))
    assert set(response.structured) == {"label", "score"}
    assert isinstance(response.structured["score"], int)
    assert json.loads(response.text) == response.structured


def test_output_schema_repairs_then_rejects(dev_agent):
    repaired = dev_agent.invoke(
        ManagedAgentRequest(prompt="[[fault:invalid_output]] fix", vendor_options={"output_schema": SCHEMA})
    )
    assert set(repaired.structured) == {"label", "score"}
    with pytest.raises(ManagedAgentRejected, match="output schema"):
        dev_agent.invoke(
            ManagedAgentRequest(
                prompt="[[fault:invalid_output:times=9]] never",
                vendor_options={"output_schema": SCHEMA, "output_retries": 1},
            )
        )


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_error(400, "bad field", "invalid_request"), ManagedAgentRejected),
        (_error(422, "unprocessable"), ManagedAgentRejected),
        (_error(401, "no key"), ManagedAgentInvocationError),
        (_error(403, "forbidden"), ManagedAgentInvocationError),
        (_error(404, "no such agent"), ManagedAgentInvocationError),
        (_error(500, "down"), ServerError),
        (_error(503, "down"), ServerError),
        (_error(429, "slow down", "rate_limit_exceeded"), RateLimitError),
    ],
)
def test_error_mapping(server, make_conn, reply, expected):
    make_conn("ma_err", server.url, max_retries=0)
    server.script()
    server.default = reply
    agent = AgentChatManagedAgentHook("ma_err").agent("x")
    with pytest.raises(expected) as info:
        agent.invoke(ManagedAgentRequest(prompt="q"))
    assert "sk-canary" not in str(info.value)


def test_content_filter_and_refused(dev_agent, make_conn):
    with pytest.raises(ManagedAgentRejected, match="content filter"):
        dev_agent.invoke(ManagedAgentRequest(prompt="[[fault:content_filter]] hmm"))
    make_conn("ma_refused", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    with pytest.raises(RefusedError):
        AgentChatManagedAgentHook("ma_refused").agent("x").invoke(ManagedAgentRequest(prompt="q"))


def test_timeout_bounds_the_whole_call_retries_included(server, make_conn):
    """Every attempt answers fast (a 503 asking for a 2 s back-off); only the whole call's bound can stop it."""
    make_conn("ma_slow", server.url, max_retries=6)
    server.script()
    server.default = (503, {"content-type": "application/json", "retry-after": "2"}, b'{"error": {"message": "x"}}')
    agent = AgentChatManagedAgentHook("ma_slow").agent("x")
    with pytest.raises(NetworkTimeoutError, match="timeout=1s"):
        agent.invoke(ManagedAgentRequest(prompt="q", timeout=1))
    assert 1 <= len(server.requests) < 7  # cut short: the retries were not all spent


def test_timeout_cuts_a_slow_attempt(dev_agent):
    with pytest.raises(NetworkTimeoutError):
        dev_agent.invoke(ManagedAgentRequest(prompt="[[latency:5000]] slow", timeout=0.5))


def test_failover_client_moves_on_for_transient_errors(devserver, server, make_conn):
    make_conn("ma_down", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn("ma_500", server.url, max_retries=1)
    make_conn("ma_standby", devserver.url, max_retries=0)
    server.script()
    server.default = _error(500, "down")
    group = FailoverManagedAgentClient(
        [
            AgentChatManagedAgentHook("ma_down").agent("primary"),
            AgentChatManagedAgentHook("ma_500").agent("secondary"),
            AgentChatManagedAgentHook("ma_standby").agent("standby"),
        ]
    )
    assert group.capabilities.structured_output and not group.capabilities.sessions
    assert group.invoke(ManagedAgentRequest(prompt="who answers")).text == "Echo: who answers"
    assert len(server.requests) == 2  # the 500 was retried once, then the group moved on


def test_failover_client_stops_at_a_rejection(server, make_conn, devserver):
    make_conn("ma_400", server.url, max_retries=0)
    make_conn("ma_standby2", devserver.url, max_retries=0)
    server.script(_error(400, "bad field"))
    standby = AgentChatManagedAgentHook("ma_standby2").agent("standby")
    group = FailoverManagedAgentClient([AgentChatManagedAgentHook("ma_400").agent("primary"), standby])
    before = devserver.stats(timestamps=False)["total"]
    with pytest.raises(ManagedAgentRejected):
        group.invoke(ManagedAgentRequest(prompt="rejected"))
    assert devserver.stats(timestamps=False)["total"] == before  # the standby was never asked


def test_toolset_in_a_pydantic_ai_agent(dev_agent, server, make_conn):
    """A calling model (pydantic-ai's offline TestModel) consults the DO agent through common.ai's toolset."""
    from airflow.providers.common.ai.toolsets import ManagedAgentToolset
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import UnexpectedModelBehavior
    from pydantic_ai.models.test import TestModel

    toolset = ManagedAgentToolset(dev_agent, tool_name="ask_support_agent", description="Support answers", timeout=30)
    assert toolset.invoke_sync("direct") == "Echo: direct"
    result = Agent(TestModel(), toolsets=[toolset]).run_sync("consult the agent")
    assert "Echo: " in result.output

    # A rejection becomes a ModelRetry for the calling model; with no retries left it fails the run.
    make_conn("ma_tool400", server.url, max_retries=0)
    server.script()
    server.default = _error(400, "bad field")
    rejecting = ManagedAgentToolset(
        AgentChatManagedAgentHook("ma_tool400").agent("x"), tool_name="ask", max_retries=0, timeout=10
    )
    with pytest.raises(UnexpectedModelBehavior, match="max retries"):
        Agent(TestModel(), toolsets=[rejecting]).run_sync("consult")
    assert len(server.requests) >= 1
