"""The error hierarchy as data: a stable kind per class, and a JSON round trip that keeps the class."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat import exceptions as errors
from airflow_agentchat.batch.items import InvalidItemError
from airflow_agentchat.batch.store import OutputPathError
from airflow_agentchat.operators.approval import ApprovalError
from airflow_agentchat.structured_output import OutputValidationError
from airflow_agentchat.tools import ToolError

# The names result files carried before kinds moved onto the classes: they must not change.
KINDS_WRITTEN_BEFORE = {
    errors.InvalidRequestError: "invalid_request",
    errors.AgentChatConnectionError: "connection_error",
    errors.AuthenticationError: "authentication_error",
    errors.NotFoundError: "not_found",
    errors.RateLimitError: "rate_limited",
    errors.ServerError: "server_error",
    errors.APIError: "api_error",
    errors.TruncatedStreamError: "truncated_stream",
    errors.StreamError: "stream_error",
    errors.AgentChatError: "agentchat_error",
}


def _all_classes() -> list[type[errors.AgentChatError]]:
    return [
        value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, errors.AgentChatError)
    ]


def test_every_class_has_its_own_kind_and_the_old_names_are_kept():
    classes = _all_classes()
    assert len(classes) == 19
    kinds = [cls.__dict__.get("kind") for cls in classes]
    assert None not in kinds and len(set(kinds)) == len(kinds)
    assert {cls: cls.kind for cls in KINDS_WRITTEN_BEFORE} == KINDS_WRITTEN_BEFORE


def test_a_class_without_its_own_kind_is_refused():
    with pytest.raises(TypeError, match="own kind"):

        class Unnamed(errors.APIError):
            pass

    class Named(errors.APIError, kind="test_named"):
        pass

    assert Named.kind == "test_named" and type(errors.AgentChatError.from_dict({"kind": "test_named"})) is Named


SAMPLES = [
    errors.AgentChatError("something odd"),
    errors.InvalidRequestError([("temperature", "must be at most 2"), ("messages", "must not be empty")]),
    errors.AgentChatConnectionError("Request cancelled: the task was killed"),
    errors.DNSError("no such host"),
    errors.RefusedError("refused"),
    errors.TLSError("bad certificate"),
    errors.NetworkTimeoutError("read timed out"),
    errors.ResetError("reset by peer"),
    errors.APIError(400, "bad n", code="bad_n", error_type="invalid_request_error", param="n", request_id="r1"),
    errors.AuthenticationError(401, "bad key", request_id="r2"),
    errors.NotFoundError(404, "Not Found"),
    errors.RateLimitError(429, "slow down", code="rate_limit_exceeded", retry_after=2.5),
    errors.RateLimitError(429, "quota", code="insufficient_quota"),
    errors.ServerError(503, "overloaded", request_id="r3"),
    errors.InvalidResponseError(200, "Response is not a chat completion (no choices)"),
    errors.StreamError("Error event in stream: boom"),
    errors.StreamError("Stream broke while reading", retryable=True),
    errors.TruncatedStreamError("ended early"),
    errors.ContentFilterError(text="Echo:", index=0, request_id="r4", usage={"total_tokens": 3}),
    errors.ResponseTooLargeError("answer over 1 MiB", setting="max_event_bytes", limit=1 << 20),
    errors.RateLimitBackendError("Redis connection redis_default (127.0.0.1:1) is unreachable"),
    OutputValidationError([("name", "Field required")], '{"nam": 1}', 2, {"total_tokens": 9}),
    ApprovalError("Rejected by ada: wrong tone", decision="rejected", reviewer="ada", comment="wrong tone"),
    ToolError("lookup raised KeyError", tool="lookup", round=2),
    OutputPathError("output_path is held by another live run"),
    InvalidItemError("line 2 is not valid UTF-8 (invalid start byte at byte 0)"),
    InvalidItemError("input item 3 has id '7', already taken", [("id", "duplicate id '7'")]),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: f"{type(e).__name__}-{e.retryable}")
def test_to_dict_and_back_keeps_class_text_and_fields(error):
    error.attempts = 3
    data = json.loads(json.dumps(error.to_dict()))
    rebuilt = errors.AgentChatError.from_dict(data)
    assert type(rebuilt) is type(error)
    assert (str(rebuilt), rebuilt.kind, rebuilt.retryable, rebuilt.attempts) == (
        str(error),
        error.kind,
        error.retryable,
        3,
    )
    fields = (
        "status",
        "message",
        "code",
        "error_type",
        "param",
        "request_id",
        "retry_after",
        "errors",
        "raw",
        "rounds",
        "setting",
        "limit",
    )
    assert {f: getattr(rebuilt, f, None) for f in fields} == {f: getattr(error, f, None) for f in fields}


def test_an_unknown_kind_becomes_the_base_class():
    rebuilt = errors.AgentChatError.from_dict({"kind": "from_a_newer_version", "message": "odd"})
    assert type(rebuilt) is errors.AgentChatError and str(rebuilt) == "odd"
