"""The dev server's own tests share one dev server that requires a key (so auth is exercised on every call)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from suite import DEVSERVER_KEY

from airflow_agentchat.devserver import DevServer


@pytest.fixture(scope="session")
def server() -> Iterator[DevServer]:
    """Overrides the session's keyless dev server for tests/devserver/; ``client`` cleans it before each test."""
    with DevServer(api_key=DEVSERVER_KEY) as srv:
        yield srv


@pytest.fixture()
def client(server: DevServer) -> openai.OpenAI:
    """The official ``openai`` SDK (an independent client) on the clean keyed server."""
    server.reset()
    server.configure(latency_ms=0, chunk_latency_ms=0)
    return openai.OpenAI(base_url=server.base_url, api_key=DEVSERVER_KEY, max_retries=0, timeout=10)
