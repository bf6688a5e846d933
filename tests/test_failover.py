"""fallback_conn_ids: which failures move the same request to the next connection, and what is recorded.

Primaries that refuse connections, answer 500, stay rate limited after the retries or refuse the request (400)
are scripted servers of the tests' own or a closed port; the dev server is the fallback.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from fakes import FakeTI
from scripted_server import ScriptedServer

from airflow_agentchat.exceptions import (
    APIError,
    AuthenticationError,
    ContentFilterError,
    InvalidRequestError,
    InvalidResponseError,
    NetworkTimeoutError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResponseTooLargeError,
    ServerError,
    StreamError,
)
from airflow_agentchat.failover import conn_ids, fails_over
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.structured_output import OutputValidationError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error(status: int, message: str = "boom", code: str | None = None, **headers: str) -> tuple[int, dict, bytes]:
    body = {"error": {"message": message, "type": "error", "code": code}}
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


@pytest.fixture()
def primary():
    server = ScriptedServer().start()
    yield server
    server.stop()


def _run(**kwargs: Any) -> tuple[Any, FakeTI, AgentChatCompletionOperator]:
    ti = FakeTI()
    kwargs.setdefault("prompt", "which agent answers")
    operator = AgentChatCompletionOperator(task_id="t", **kwargs)
    return operator.execute({"ti": ti}), ti, operator


def _total(devserver) -> int:
    return devserver.stats(timestamps=False)["total"]


# ------------------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RefusedError("refused"), True),
        (NetworkTimeoutError("deadline"), True),
        (ServerError(500, "down"), True),
        (ServerError(503, "down"), True),
        (APIError(408, "timeout"), True),
        (RateLimitError(429, "slow down", code="rate_limit_exceeded"), True),
        (RateLimitError(429, "quota", code="insufficient_quota"), True),
        (AuthenticationError(401, "bad key"), True),
        (NotFoundError(404, "no agent"), True),
        (InvalidResponseError(200, "garbled"), True),
        (StreamError("broke", retryable=True), True),
        (StreamError("error event"), False),
        (APIError(400, "bad field"), False),
        (APIError(422, "unprocessable"), False),
        (InvalidRequestError([("temperature", "0..2")]), False),
        (ContentFilterError(), False),
        (OutputValidationError([("(root)", "bad")], "x", 3, {}), False),
        (ResponseTooLargeError("big"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_errors_fail_over(error, expected):
    assert fails_over(error) is expected


def test_a_cancelled_request_does_not_fail_over():
    from airflow_agentchat.exceptions import AgentChatConnectionError

    assert not fails_over(AgentChatConnectionError("Request cancelled: the task was killed"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ["a"]),
        (["b", "c", "b", "a"], ["a", "b", "c"]),
        ('["b", "c"]', ["a", "b", "c"]),
        ("b, c", ["a", "b", "c"]),
    ],
)
def test_conn_ids(value, expected):
    assert conn_ids("a", value) == expected


def test_a_bad_fallback_list_fails_at_parse_time():
    with pytest.raises(ValueError, match="fallback_conn_ids"):
        AgentChatCompletionOperator(task_id="t", prompt="x", fallback_conn_ids=[3])


# ------------------------------------------------------------------------------------------ the operator


def test_refused_primary_fails_over_and_records_the_connection(devserver, make_conn):
    make_conn("fo_down", f"http://127.0.0.1:{_free_port()}", max_retries=1)
    make_conn("fo_dev", devserver.url)
    value, ti, operator = _run(agentchat_conn_id="fo_down", fallback_conn_ids=["fo_dev"])
    assert value == "Echo: which agent answers"
    assert ti.xcom["response"]["conn_id"] == "fo_dev"
    assert ti.xcom["usage"]["conn_id"] == "fo_dev" and ti.xcom["usage"]["total_tokens"] > 0
    assert operator.answered_by == "fo_dev"
    facet = operator.get_openlineage_facets_on_complete(None).run_facets["agentChat"]
    assert facet.connId == "fo_dev"
    assert facet.errorTypes == {"connection_refused": 1} and facet.requests == 2  # the primary's try counts too


def test_500_primary_fails_over_after_its_retries(primary, devserver, make_conn):
    primary.script()
    primary.default = _error(500, "down")
    make_conn("fo_500", primary.url, max_retries=1)
    make_conn("fo_dev", devserver.url)
    value, ti, _ = _run(agentchat_conn_id="fo_500", fallback_conn_ids="fo_dev")
    assert value == "Echo: which agent answers" and ti.xcom["response"]["conn_id"] == "fo_dev"
    assert len(primary.requests) == 2  # retried once on its own connection first


def test_rate_limited_primary_fails_over_after_its_retries(primary, devserver, make_conn):
    primary.script()
    primary.default = _error(429, "slow down", "rate_limit_exceeded", **{"retry-after-ms": "10"})
    make_conn("fo_429", primary.url, max_retries=2)
    make_conn("fo_dev", devserver.url)
    value, ti, _ = _run(agentchat_conn_id="fo_429", fallback_conn_ids=["fo_dev"])
    assert value == "Echo: which agent answers" and ti.xcom["usage"]["conn_id"] == "fo_dev"
    assert len(primary.requests) == 3


def test_an_invalid_request_does_not_fail_over(primary, devserver, make_conn):
    primary.script(_error(400, "messages[0].content: bad", "invalid_request"))
    make_conn("fo_400", primary.url, max_retries=2)
    make_conn("fo_dev", devserver.url)
    before = _total(devserver)
    with pytest.raises(APIError, match="HTTP 400"):
        _run(agentchat_conn_id="fo_400", fallback_conn_ids=["fo_dev"])
    assert len(primary.requests) == 1 and _total(devserver) == before


def test_content_filter_and_invalid_output_do_not_fail_over(primary, devserver, make_conn):
    primary.script()
    make_conn("fo_dev", devserver.url)
    make_conn("fo_spare", primary.url)
    with pytest.raises(ContentFilterError):
        _run(agentchat_conn_id="fo_dev", fallback_conn_ids=["fo_spare"], prompt="[[fault:content_filter]] x")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with pytest.raises(OutputValidationError):
        _run(
            agentchat_conn_id="fo_dev",
            fallback_conn_ids=["fo_spare"],
            prompt="[[fault:invalid_output:times=9]] y",
            output_schema=schema,
            output_retries=1,
        )
    assert primary.requests == []


def test_a_conversation_stays_on_the_connection_that_answered(primary, devserver, make_conn):
    """The first answer needs a repair round; the primary then fails: the task fails, the fallback is not asked
    (it would continue a conversation it never held)."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    prose = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "no json"}, "finish_reason": "stop"}]}
    primary.script((200, {"content-type": "application/json"}, json.dumps(prose).encode()))
    primary.default = _error(500, "down")
    make_conn("fo_flaky", primary.url, max_retries=0)
    make_conn("fo_dev", devserver.url)
    before = _total(devserver)
    with pytest.raises(ServerError):
        _run(agentchat_conn_id="fo_flaky", fallback_conn_ids=["fo_dev"], output_schema=schema, output_strategy="json")
    assert len(primary.requests) == 2 and _total(devserver) == before


def test_prices_follow_the_connection_that_answered(devserver, make_conn):
    make_conn("fo_down", f"http://127.0.0.1:{_free_port()}", max_retries=0, prompt_token_price=1000000)
    make_conn("fo_cheap", devserver.url, prompt_token_price=1000, completion_token_price=1000)
    _, ti, _ = _run(agentchat_conn_id="fo_down", fallback_conn_ids=["fo_cheap"])
    usage = ti.xcom["usage"]
    assert ti.xcom["cost"] == pytest.approx((usage["prompt_tokens"] + usage["completion_tokens"]) / 1000)


def test_the_last_connections_error_is_raised(make_conn):
    make_conn("fo_down1", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn("fo_down2", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    with pytest.raises(RefusedError):
        _run(agentchat_conn_id="fo_down1", fallback_conn_ids=["fo_down2"])


# ------------------------------------------------------------------------------------------ deferrable


def test_the_trigger_fails_over_and_the_task_takes_over_that_connection(devserver, make_conn):
    from airflow_agentchat.triggers.agent_chat import AgentChatCompletionTrigger

    make_conn("fo_down", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn("fo_dev", devserver.url)
    body = {"model": "m", "messages": [{"role": "user", "content": "deferred"}]}
    trigger = AgentChatCompletionTrigger("fo_down", body, fallback_conn_ids=["fo_dev"])
    assert trigger.serialize()[1]["fallback_conn_ids"] == ["fo_dev"]

    async def first_event() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert event["status"] == "success" and event["meta"]["conn_id"] == "fo_dev"
    operator = AgentChatCompletionOperator(
        task_id="t", prompt="deferred", agentchat_conn_id="fo_down", fallback_conn_ids=["fo_dev"]
    )
    ti = FakeTI()
    assert operator.execute_complete({"ti": ti}, event) == "Echo: deferred"
    assert operator.answered_by == "fo_dev" and ti.xcom["response"]["conn_id"] == "fo_dev"


def test_the_branch_operator_and_the_decorator_share_the_argument(devserver, make_conn):
    from airflow_agentchat.decorators.agent_chat import _AgentChatDecoratedOperator
    from airflow_agentchat.operators.branch import AgentChatBranchOperator

    for cls in (AgentChatBranchOperator, _AgentChatDecoratedOperator):
        assert "fallback_conn_ids" in cls.template_fields
    make_conn("fo_down", f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn("fo_dev", devserver.url)
    branch = AgentChatBranchOperator(
        task_id="route",
        prompt="pick",
        branches={"a": "first", "b": "second"},
        agentchat_conn_id="fo_down",
        fallback_conn_ids=["fo_dev"],
    )
    messages, params, _ = branch.prepare()
    completion = branch._send(branch.hook.build_request(messages, **params))
    assert completion.meta["conn_id"] == "fo_dev" and branch.answered_by == "fo_dev"


def test_metrics_follow_the_connection_that_answered():
    from airflow_agentchat.metrics import TaskMetrics

    sent: list[tuple[str, dict]] = []

    class Stats:
        def incr(self, name: str, count: int = 1, tags: dict | None = None) -> None:
            sent.append((name, dict(tags or {})))

        def timing(self, name: str, value: float, tags: dict | None = None) -> None:
            sent.append((name, dict(tags or {})))

    metrics = TaskMetrics(Stats(), {"conn_id": "primary", "dag_id": "d", "task_id": "t"}, name_parts=True)
    metrics.use_connection("standby")
    metrics.request("ok", 1, 5.0, {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    metrics.flush()
    assert sent and all(tags.get("conn_id") == "standby" for name, tags in sent if tags)
    assert any(name.endswith(".standby.d.t.ok") or ".standby.d.t" in name for name, _ in sent)
