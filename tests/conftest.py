"""Session-wide test set-up: one metadata DB, one dev server, one scripted server, one moto S3 server.

The environment (a throw-away AIRFLOW_HOME) is set by ``suite``, imported first, before any test imports Airflow.
Connections are real ``AIRFLOW_CONN_<ID>`` JSON environment variables, as users define them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the support modules: suite, fakes, the servers
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # dev/ (make ui's launcher)

# suite sets AIRFLOW_HOME; none of these imports Airflow, and no test module is imported before this conftest.
from fakes import BUCKET, JPEG, PNG, STORAGE_CONN
from fault_server import FaultServer
from scripted_server import ScriptedServer
from suite import AIRFLOW_HOME, CANARY_KEY, make_bucket


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The integration tests first: they take longest, so under xdist (which hands out whole files in this order,
    ``make test`` runs ``--dist loadfile --no-loadscope-reorder``) they must not be the last to start."""
    items.sort(key=lambda item: "integration" not in item.path.parts)  # stable: a file's tests stay in order


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
def server(devserver) -> Iterator[object]:
    """The session's dev server with no stats, no pending faults and no latency, before the test and after it.

    A module that needs latency overrides this fixture and configures it (the reset after the test clears it).
    """
    devserver.reset()
    devserver.configure(latency_ms=0)
    yield devserver
    devserver.reset()
    devserver.configure(latency_ms=0)


@pytest.fixture()
def fault_server() -> Iterator[FaultServer]:
    """A fresh :class:`FaultServer` for one test (its settings and counts are the test's own)."""
    server = FaultServer().start()
    yield server
    server.stop()


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
def moto_url() -> Iterator[str]:
    """One moto S3 server (a subprocess) for the session; each module makes its own bucket with ``make_bucket``."""
    from dev.ui import free_port

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def media_s3(moto_url: str) -> str:
    """The session's S3 server with the media tests' bucket and images (see ``fakes.BUCKET``)."""
    import boto3

    make_bucket(moto_url, BUCKET)
    client = boto3.client(
        "s3", endpoint_url=moto_url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    )
    client.put_object(Bucket=BUCKET, Key="claims/dent.jpg", Body=JPEG)
    client.put_object(Bucket=BUCKET, Key="claims/big.png", Body=PNG + bytes(5000))
    return moto_url


@pytest.fixture()
def storage_conn(media_s3: str, make_aws_conn: Callable[..., str]) -> str:
    """The ``aws`` connection to ``media_s3``."""
    return make_aws_conn(STORAGE_CONN, media_s3, "media-key", "media-secret")


@pytest.fixture()
def make_aws_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an ``aws`` connection to an S3 endpoint, with no ambient AWS credentials to fall back on."""

    def make(conn_id: str, endpoint_url: str, login: str, password: str) -> str:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        conn = {"conn_type": "aws", "login": login, "password": password}
        conn["extra"] = {"endpoint_url": endpoint_url, "region_name": "us-east-1"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate the session's SQLite metadata DB once; tests that run DAGs depend on this.

    Under xdist each worker has an AIRFLOW_HOME of its own: the first worker to get here migrates, and the
    others copy its freshly migrated DB instead of paying for the migration again.
    """
    db = AIRFLOW_HOME / "airflow.db"
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        _migrate()
        return AIRFLOW_HOME
    shared = tmp_path_factory.getbasetemp().parent / "migrated-airflow.db"
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if shared.exists():
            shutil.copyfile(shared, db)
        else:
            _migrate()
            shutil.copyfile(db, shared)
    return AIRFLOW_HOME


def _migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )


@pytest.fixture(scope="session")
def run_dag(airflow_db: Path, devserver) -> Callable[..., dict]:
    """Run ``airflow dags test DAG_ID [DATE]`` against the dev server; return the run's XComs.

    The result maps ``(task_id, map_index, key)`` to the value; ``result["_log"]`` holds the command's output
    and ``result["_returncode"]`` its exit code. ``conn`` overrides ``agentchat_default``'s JSON; ``conf`` is
    the run's conf (params); ``env`` adds environment variables (e.g. ``AIRFLOW__METRICS__*`` or
    ``AIRFLOW__OPENLINEAGE__*``) for this run only.
    """

    def run(
        dag_id: str,
        logical_date: str | None = None,
        *,
        conn: dict | None = None,
        check: bool = True,
        conf: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> dict:
        extra_env, env = env or {}, os.environ.copy()
        env["AIRFLOW_CONN_AGENTCHAT_DEFAULT"] = json.dumps(
            conn or {"conn_type": "agentchat", "host": devserver.url, "password": CANARY_KEY}
        )
        env["AGENTCHAT_EXAMPLE_OUTPUT_DIR"] = str(AIRFLOW_HOME)
        env.update(extra_env)
        args = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
        if logical_date:
            args.append(logical_date)
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        log = proc.stdout + proc.stderr
        if check and proc.returncode:
            raise AssertionError(f"airflow dags test {dag_id} failed ({proc.returncode}):\n{log[-8000:]}")
        return {**dag_run_xcoms(dag_id), "_log": log, "_returncode": proc.returncode}

    return run


def dag_run_xcoms(dag_id: str) -> dict:
    """XComs of the latest run of ``dag_id`` in the session's metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        if run is None:
            return {}
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id).all()
        return {(r.task_id, r.map_index, r.key): r.value for r in rows}
