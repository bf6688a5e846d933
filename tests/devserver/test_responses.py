"""Wire shapes the dev server sends (devserver/responses.py): every fault's error body is one the hook reads into
the error kind, status and message a real endpoint would give."""

from __future__ import annotations

import pytest

from airflow_agentchat.devserver.responses import SSE_DONE, error_body, fault_response, sse


def test_an_sse_event_is_one_data_line_of_compact_json():
    assert sse({"a": [1, "é"]}) == 'data: {"a":[1,"é"]}\n\n'.encode()
    assert SSE_DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("kind", "params", "status", "media", "message"),
    [
        ("429", {}, 429, "application/json", "Rate limit reached"),
        ("insufficient_quota", {}, 429, "application/json", "exceeded your current quota"),
        ("503", {}, 503, "application/json", "overloaded"),
        ("500", {"message": "boom"}, 500, "application/json", "boom"),
        ("detail", {"status": 400}, 400, "application/json", "Bad request"),
        ("too_many_requests", {}, 429, "application/json", "Too many requests"),
        ("502", {}, 502, "text/html", "502 Bad Gateway"),
    ],
)
def test_each_fault_has_its_status_media_type_and_words(kind, params, status, media, message):
    got_status, got_media, body = fault_response(kind, params, "req-9")
    assert (got_status, got_media) == (status, media) and message in body.decode()


def test_the_error_shape_is_openais():
    assert error_body("no", "invalid_request_error", "bad", "messages") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "messages", "code": "bad"}
    }


@pytest.mark.parametrize(
    ("kind", "error_kind"),
    [
        ("429", "rate_limited"),
        ("insufficient_quota", "rate_limited"),
        ("503", "server_error"),
        ("too_many_requests", "rate_limited"),
        ("detail", "api_error"),
        ("502", "server_error"),
    ],
)
def test_the_hook_reads_each_fault_body_into_its_kind_status_and_message(kind, error_kind):
    from airflow_agentchat.wire_errors import error_from_response

    status, media, body = fault_response(kind, {}, "req-9")
    error = error_from_response(status, {"content-type": media, "x-request-id": "req-9"}, body)
    assert (error.kind, error.status) == (error_kind, status)
    assert error.message and error.message in body.decode()
