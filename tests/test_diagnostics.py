"""diagnostics.py: what a connection test says, chosen by the error's class, with the server's status and words."""

from __future__ import annotations

import pytest

from airflow_agentchat.diagnostics import failed
from airflow_agentchat.exceptions import (
    AuthenticationError,
    DNSError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResponseTooLargeError,
    ServerError,
    TLSError,
)

URL = "https://agent.example.com"


def test_a_rejected_key_names_the_status_code_message_and_request_id():
    error = AuthenticationError(401, "bad key", code="invalid_api_key", request_id="req-1")
    assert failed(URL, error) == (
        f"Access key rejected by {URL} (HTTP 401, invalid_api_key, bad key, request id req-1): "
        "check the connection's Agent access key."
    )


@pytest.mark.parametrize(
    ("error", "start", "advice"),
    [
        (NotFoundError(404, "no route"), f"{URL} answered 404 (HTTP 404, no route)", "agent's URL"),
        (RateLimitError(429, "slow down"), f"Rate limited by {URL} (HTTP 429, slow down)", "try again later"),
        (ServerError(503, "busy"), f"{URL} answered with an error:", "busy"),
        (DNSError("no such host"), f"Cannot resolve the host of {URL}", "Agent endpoint"),
        (RefusedError("refused"), f"Cannot connect to {URL} (connection refused)", "port right"),
        (TLSError("bad cert"), f"TLS failed for {URL}", "CA bundle"),
        (ResponseTooLargeError("over 1 MiB"), f"{URL} answered with more than the connection allows", "over 1 MiB"),
    ],
)
def test_each_kind_of_failure_gets_its_own_advice(error, start, advice):
    message = failed(URL, error)
    assert message.startswith(start) and advice in message
