"""Session-wide test set-up: one throw-away AIRFLOW_HOME, one metadata DB, one dev server, one scripted server.

Airflow reads its configuration at import, so the environment is set here, before any test imports it.
Connections are real ``AIRFLOW_CONN_<ID>`` JSON environment variables, as users define them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="agentchat-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripted_server import ScriptedServer  # noqa: E402

#: A key that must never show up in logs, XCom, exception text or UI responses.
CANARY_KEY = "sk-canary-7f3a9c-DO-NOT-LEAK"


@pytest.fixture(scope="session")
def canary_key() -> str:
    return CANARY_KEY


@pytest.fixture(scope="session")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def devserver() -> Iterator[object]:
    """One embedded dev agent server (a subprocess) for the whole session."""
    from airflow_agentchat.devserver import DevServer

    with DevServer() as server:
        yield server


@pytest.fixture()
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define a connection through ``AIRFLOW_CONN_<ID>``, the way users do, and return its id."""

    def make(conn_id: str, host: str, password: str | None = CANARY_KEY, **extra: object) -> str:
        conn = {"conn_type": "agentchat", "host": host, "extra": extra}
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata DB once; tests that run DAGs depend on this."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    return AIRFLOW_HOME
