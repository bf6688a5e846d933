"""The scale-out environment: Airflow on the CeleryExecutor with two workers, S3 served by moto, the dev agent.

Everything listens on 127.0.0.1 on free ports and lives in one throw-away folder::

    redis-server            Celery broker (db 0) and result backend (db 1)
    moto_server             S3-compatible storage; reached through the connection ``scaleout_s3``
    dev agent server        the agent endpoint (``agentchat_default``), with a per-request latency
    airflow api-server      UI/REST API and the execution API the task runners talk to
    airflow scheduler       CeleryExecutor: queues task instances in Redis
    airflow dag-processor   parses the DAGs folder (the sharded batch example only)
    airflow celery worker   x2, ``worker-1`` / ``worker-2`` (``[core] hostname_callable``)

The metadata DB is SQLite: in Airflow 3 only the api-server, scheduler and dag-processor open it (workers go
through the execution API), which SQLite serves well enough at this scale.

Use as a context manager, or ``start()`` / ``stop()``; :meth:`ScaleOutEnv.trigger` and
:meth:`ScaleOutEnv.wait_run` drive DAG runs through the REST API, :meth:`ScaleOutEnv.kill_worker` crashes a
worker with everything it runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_agentchat.devserver import DevServer
from dev.ui import AirflowApiServer, Component, airflow_env, free_port, stop_all
from scaleout.processes import crash

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DAG_ID = "example_agentchat_batch"
BUCKET = "agentchat-scaleout"
STORAGE_CONN_ID = "scaleout_s3"
_FINISHED = {"success", "failed"}


class ServiceError(RuntimeError):
    """A component exited early or did not become ready in time."""


class ScaleOutEnv:
    """Start and stop the whole environment; see the module docstring for what runs."""

    def __init__(
        self,
        *,
        workers: int = 2,
        worker_concurrency: int = 2,
        latency_ms: float = 50.0,
        api_key: str | None = None,
        home: Path | None = None,
        keep_home: bool = False,
        startup_timeout: float = 300.0,
    ) -> None:
        self.worker_names = [f"worker-{i + 1}" for i in range(workers)]
        self.worker_concurrency = worker_concurrency
        self.latency_ms = latency_ms
        self.api_key = api_key or f"scaleout-{secrets.token_urlsafe(12)}"
        self.home = Path(home) if home else Path(tempfile.mkdtemp(prefix="agentchat-scaleout-"))
        self.keep_home = keep_home or home is not None
        self.startup_timeout = startup_timeout
        self.password = secrets.token_urlsafe(12)
        self.services: dict[str, Component] = {}
        self.killed: set[str] = set()  # services killed on purpose (kill_worker)
        self.devserver: DevServer | None = None
        self.api: AirflowApiServer | None = None
        self.env: dict[str, str] = {}
        self.s3_url = ""
        self._token = ""

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> ScaleOutEnv:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        home = self.home
        (home / "logs").mkdir(parents=True, exist_ok=True)
        dags = home / "dags"
        dags.mkdir(exist_ok=True)
        link = dags / f"{DAG_ID}.py"
        if not link.exists():
            link.symlink_to(ROOT / "dags" / f"{DAG_ID}.py")

        redis_port, s3_port, api_port = free_port(), free_port(), free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
        # Ambient AWS credentials would hide a missing connection; the instance metadata probe only costs time.
        base["AWS_EC2_METADATA_DISABLED"] = "true"
        base["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), base.get("PYTHONPATH")) if p)

        self._service("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""], base)
        self.s3_url = f"http://127.0.0.1:{s3_port}"
        moto = Path(sys.executable).with_name("moto_server")
        self._service("moto", [str(moto), "-H", "127.0.0.1", "-p", str(s3_port)], base)
        self.devserver = DevServer(api_key=self.api_key, latency_ms=self.latency_ms).start()

        env = airflow_env(home, {"admin": ("admin", self.password)}, base)
        redis = f"redis://127.0.0.1:{redis_port}"
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "scaleout.hostname.hostname",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
                "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__CELERY__BROKER_URL": f"{redis}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis}/1",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                # Manual runs only: unpausing must not start a scheduled run with the example's defaults.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                # A killed worker's task is noticed after 20 s without heartbeat (default 300 s) and retried.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW_CONN_AGENTCHAT_DEFAULT": json.dumps(
                    {"conn_type": "agentchat", "host": self.devserver.url, "password": self.api_key}
                ),
                "AIRFLOW_CONN_" + STORAGE_CONN_ID.upper(): json.dumps(
                    {
                        "conn_type": "aws",
                        "login": "scaleout-access-key",
                        "password": "scaleout-secret-key",
                        "extra": {"endpoint_url": self.s3_url, "region_name": "us-east-1"},
                    }
                ),
            }
        )
        self.env = env
        with ThreadPoolExecutor(2) as pool:
            migrated = pool.submit(
                subprocess.run,
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout,
            )
            self._wait(self._create_bucket, "S3 bucket", 60)
            self._wait_log("redis", "Ready to accept connections", 30)
            result = migrated.result()
        if result.returncode:
            raise ServiceError(f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")

        airflow = [sys.executable, "-m", "airflow"]
        self._service("scheduler", [*airflow, "scheduler"], env)
        self._service("dag-processor", [*airflow, "dag-processor"], env)
        for name in self.worker_names:
            worker_env = {**env, "AGENTCHAT_SCALEOUT_HOST": name}
            cmd = [*airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
            self._service(name, [*cmd, "--without-gossip", "--without-mingle"], worker_env)
        api_env = {**env, "AGENTCHAT_SCALEOUT_HOST": "api-server"}
        self.api = AirflowApiServer(
            api_env, port=api_port, startup_timeout=self.startup_timeout, log_path=home / "api-server.log"
        ).start()
        # The execution API is built on its first request (tens of seconds on a loaded machine): do it now,
        # not while the first task's start call waits.
        self._wait(lambda: _get(f"{self.api.url}/execution/health") is not None, "execution API", self.startup_timeout)
        self._token = self.api.token("admin", self.password)
        for name in self.worker_names:
            self._wait_log(name, " ready.", self.startup_timeout)
        self._wait(lambda: self.rest("GET", f"/api/v2/dags/{DAG_ID}", check=False) is not None, "parsed DAG", 180)

    def _service(self, name: str, cmd: list[str], env: dict[str, str]) -> Component:
        self.services[name] = Component(name, cmd, env, self.home / "logs" / f"{name}.log").start()
        return self.services[name]

    def _wait_log(self, name: str, text: str, timeout: float) -> None:
        path = self.services[name].log_path
        assert path is not None
        self._wait(lambda: text in path.read_text(errors="replace"), f"{text!r} in the {name} log", timeout)

    def _wait(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _safely(ready):
            dead = [s.name for s in self.services.values() if not s.running and s.name not in self.killed]
            if dead:
                raise ServiceError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs(dead)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"no {what} after {timeout:.0f}s:\n{self.logs()}")
            time.sleep(0.5)

    def _create_bucket(self) -> bool:
        try:
            self.s3().create_bucket(Bucket=BUCKET)
        except Exception:  # botocore's connection errors are not OSErrors: moto is not listening yet
            return False
        return True

    def stop(self) -> None:
        """Stop everything started (workers and their tasks first), then remove the folder unless kept."""
        airflow = [self.services[n] for n in (*self.worker_names, "scheduler", "dag-processor") if n in self.services]
        stop_all(airflow, timeout=10)  # workers and their tasks first, all at once
        if self.api is not None:
            self.api.stop()
            self.api = None
        stop_all([self.services[n] for n in ("moto", "redis") if n in self.services], timeout=10)
        self.services.clear()
        if self.devserver is not None:
            self.devserver.stop()
            self.devserver = None
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> ScaleOutEnv:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def logs(self, names: list[str] | None = None, size: int = 2500) -> str:
        """The end of each service's log, for failure messages."""
        chosen = names or list(self.services)
        parts = [f"--- {n} ---\n{self.services[n].log_tail(size)}" for n in chosen if n in self.services]
        if self.api is not None and (names is None or "api-server" in names):
            parts.append(f"--- api-server ---\n{self.api.log_tail(size)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------------ workers

    def kill_worker(self, name: str) -> list[int]:
        """kill -9 a Celery worker, its pool processes and the task processes (own process groups) they run."""
        self.killed.add(name)
        return crash(self.services[name])

    # ------------------------------------------------------------------------------------------ REST API

    def rest(self, method: str, path: str, body: Any = None, *, check: bool = True) -> Any:
        """Call the REST API as admin; ``check=False`` returns None on an HTTP error instead of raising."""
        assert self.api is not None
        request = urllib.request.Request(
            self.api.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if check:
                raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:1000]!r}") from exc
            return None

    def trigger(self, conf: dict[str, Any], run_id: str | None = None) -> str:
        """Start a run of the sharded batch example with ``conf`` as its params; return the run id."""
        run_id = run_id or f"scaleout__{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"
        self.rest("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        return run_id

    def run_state(self, run_id: str) -> str:
        return self.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")["state"]

    def wait_run(self, run_id: str, timeout: float = 600.0) -> str:
        """Wait until the run finishes; return its state."""
        state = ""

        def finished() -> bool:
            nonlocal state
            state = self.run_state(run_id)
            return state in _FINISHED

        self._wait(finished, f"end of run {run_id}", timeout)
        return state

    def task_instances(self, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """Task instances of a run (every map index), as the REST API returns them."""
        query = f"?task_id={task_id}" if task_id else ""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances{query}"
        return self.rest("GET", path)["task_instances"]

    def tries(self, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one task instance (try_number, state, hostname, start/end)."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/{map_index}/tries"
        return self.rest("GET", path)["task_instances"]

    def xcom(self, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        path = (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
            f"?map_index={map_index}&deserialize=true"
        )
        return self.rest("GET", path)["value"]

    # ------------------------------------------------------------------------------------------ storage

    def s3(self) -> Any:
        """A boto3 S3 client for the moto server (the test's own view of the bucket)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id="scaleout-access-key",
            aws_secret_access_key="scaleout-secret-key",
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        client = self.s3()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", ())]
        return keys

    def read(self, key: str) -> bytes:
        return self.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _safely(ready: Any) -> bool:
    try:
        return bool(ready())
    except OSError:  # not listening yet
        return False


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (OSError, urllib.error.URLError):
        return None
