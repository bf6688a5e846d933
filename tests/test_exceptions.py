"""The error hierarchy as data: a stable kind per class, and a JSON round trip that keeps the class."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat import exceptions
from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    AgentChatError,
    APIError,
    AuthenticationError,
    DNSError,
    InvalidRequestError,
    InvalidResponseError,
    NetworkTimeoutError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResetError,
    ServerError,
    StreamError,
    TLSError,
    TruncatedStreamError,
)

# The names result files carried before kinds moved onto the classes: they must not change.
KINDS_WRITTEN_BEFORE = {
    InvalidRequestError: "invalid_request",
    AgentChatConnectionError: "connection_error",
    AuthenticationError: "authentication_error",
    NotFoundError: "not_found",
    RateLimitError: "rate_limited",
    ServerError: "server_error",
    APIError: "api_error",
    TruncatedStreamError: "truncated_stream",
    StreamError: "stream_error",
    AgentChatError: "agentchat_error",
}


def _all_classes() -> list[type[AgentChatError]]:
    return [
        value for value in vars(exceptions).values() if isinstance(value, type) and issubclass(value, AgentChatError)
    ]


def test_every_class_has_its_own_kind_and_the_old_names_are_kept():
    classes = _all_classes()
    assert len(classes) == 16
    kinds = [cls.__dict__.get("kind") for cls in classes]
    assert None not in kinds and len(set(kinds)) == len(kinds)
    assert {cls: cls.kind for cls in KINDS_WRITTEN_BEFORE} == KINDS_WRITTEN_BEFORE


def test_a_class_without_its_own_kind_is_refused():
    with pytest.raises(TypeError, match="own kind"):

        class Unnamed(APIError):
            pass


SAMPLES = [
    AgentChatError("something odd"),
    InvalidRequestError([("temperature", "must be at most 2"), ("messages", "must not be empty")]),
    AgentChatConnectionError("Request cancelled: the task was killed"),
    DNSError("no such host"),
    RefusedError("refused"),
    TLSError("bad certificate"),
    NetworkTimeoutError("read timed out"),
    ResetError("reset by peer"),
    APIError(400, "bad n", code="bad_n", error_type="invalid_request_error", param="n", request_id="r1"),
    AuthenticationError(401, "bad key", request_id="r2"),
    NotFoundError(404, "Not Found"),
    RateLimitError(429, "slow down", code="rate_limit_exceeded", retry_after=2.5),
    RateLimitError(429, "quota", code="insufficient_quota"),
    ServerError(503, "overloaded", request_id="r3"),
    InvalidResponseError(200, "Response is not a chat completion (no choices)"),
    StreamError("Error event in stream: boom"),
    StreamError("Stream broke while reading", retryable=True),
    TruncatedStreamError("ended early"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: f"{type(e).__name__}-{e.retryable}")
def test_to_dict_and_back_keeps_class_text_and_fields(error):
    error.attempts = 3
    data = json.loads(json.dumps(error.to_dict()))
    rebuilt = AgentChatError.from_dict(data)
    assert type(rebuilt) is type(error)
    assert (str(rebuilt), rebuilt.kind, rebuilt.retryable, rebuilt.attempts) == (
        str(error),
        error.kind,
        error.retryable,
        3,
    )
    fields = ("status", "message", "code", "error_type", "param", "request_id", "retry_after", "errors")
    assert {f: getattr(rebuilt, f, None) for f in fields} == {f: getattr(error, f, None) for f in fields}


def test_an_unknown_kind_becomes_the_base_class():
    rebuilt = AgentChatError.from_dict({"kind": "from_a_newer_version", "message": "odd"})
    assert type(rebuilt) is AgentChatError and str(rebuilt) == "odd"
