"""wire_errors: hostile error bodies and the transport failures of every Python the package supports."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from airflow_agentchat.exceptions import AgentChatConnectionError, NetworkTimeoutError, ResetError, ServerError
from airflow_agentchat.wire_errors import connection_error, connection_error_class, error_from_response

DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [b"[" * DEEP + b"]" * DEEP, b'{"error": ' + b"[" * DEEP + b"]" * DEEP + b"}", b'{"a":' * DEEP],
    ids=["array", "inside an error", "unclosed objects"],
)
def test_a_5xx_nested_100000_deep_is_a_retryable_server_error(body):
    error = error_from_response(503, {"x-request-id": "rid-deep"}, body)
    assert type(error) is ServerError and error.retryable
    assert error.status == 503 and error.request_id == "rid-deep" and len(error.message) <= 500


def test_load_json_refuses_deep_nesting_as_a_value_error():
    from airflow_agentchat.wire_errors import load_json

    with pytest.raises(ValueError, match="nested too deeply"):
        load_json("[" * DEEP)
    assert load_json('{"a": [1]}') == {"a": [1]}


def _chained(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


def test_an_asyncio_timeout_is_a_network_timeout_on_every_python():
    """On Python 3.10 asyncio.TimeoutError is not the built-in TimeoutError: it must still be a timeout."""
    assert connection_error_class(_chained(httpx.ReadTimeout("read"), asyncio.TimeoutError())) is NetworkTimeoutError
    error = connection_error(_chained(httpx.ReadTimeout(""), asyncio.TimeoutError()), "https://x", secret=None)
    assert type(error) is NetworkTimeoutError and error.retryable


def test_an_aiohttp_server_timeout_is_a_network_timeout():
    aiohttp = pytest.importorskip("aiohttp")
    cause = aiohttp.ServerTimeoutError("Timeout on reading data from socket")
    assert connection_error_class(_chained(httpx.ReadTimeout("read"), cause)) is NetworkTimeoutError
    assert connection_error_class(aiohttp.ServerDisconnectedError()) is ResetError
    assert connection_error_class(RuntimeError("other")) is AgentChatConnectionError
