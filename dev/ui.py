"""``make ui``: a small working Airflow with the Agent Chat page, the example DAGs and an offline agent.

One command starts, in a throw-away ``AIRFLOW_HOME`` (SQLite, kept between runs in ``./tmp/airflow-ui``):

1. the embedded dev server (an offline agent that requires a random dev key and streams its answers chunk by
   chunk with a small delay, so streaming is visible);
2. the connection ``agentchat_default`` pointing at it, stored in the metadata DB like a user-made one;
3. ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` with ``dags/`` loaded, the
   LocalExecutor, connection testing on, and operators deferrable by default (so the triggerer does the
   waiting);

then prints the URL, the login and how to stop. Ctrl+C or SIGTERM stops every process it started: each
component runs in its own process group, and whatever is left of their process trees is killed at the end.
A port already in use is reported in one line naming the flag that changes it::

    python -m dev.ui [--port 8080] [--devserver-port 8088] [--home DIR] [--chunk-delay-ms 60]

:class:`AirflowApiServer` and :func:`airflow_env` are reused by the UI tests, which need the same thing: a
real API server on 127.0.0.1 with known users; :class:`AirflowStack` and :func:`stack_env` by the tests that
need a real scheduler (approval through the human-in-the-loop API, retries in new processes).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

__all__ = [
    "AirflowApiServer",
    "AirflowStack",
    "Component",
    "airflow_env",
    "free_port",
    "main",
    "stack_env",
    "store_connection",
]

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether something could listen on 127.0.0.1:``port`` now (binding is the only reliable check)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def airflow_env(
    home: Path, users: Mapping[str, tuple[str, str]], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for an Airflow process in ``home`` with SimpleAuthManager ``users`` (name -> (role, password)).

    Passwords are written to the passwords file SimpleAuthManager reads, so logins are known in advance
    (it only generates passwords for users missing from that file).
    """
    env = dict(os.environ if base is None else base)
    home.mkdir(parents=True, exist_ok=True)
    passwords_file = home / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({name: password for name, (_, password) in users.items()}) + "\n")
    passwords_file.chmod(0o600)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{r}" for n, (r, _) in users.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        }
    )
    return env


class Component:
    """One long-running child in its own process group (so stopping it reaches its children), output to a file."""

    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], log_path: Path | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Component:
        self._log = open(self.log_path, "wb") if self.log_path else tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: Ctrl+C in the terminal reaches only the launcher
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the component's process group (also after its leader exited)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def log_tail(self, size: int = 4000) -> str:
        """The end of the component's output (for failure messages)."""
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            end = self._log.tell()
            self._log.seek(max(0, end - size))
            return self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_all(components: Iterable[Component], timeout: float = 15.0) -> None:
    """SIGTERM every component's group, SIGKILL what is still alive after ``timeout``, reap everything.

    The process trees are read before signalling: a task process puts itself in a group of its own, so
    killing the component groups alone could leave it behind.
    """
    import psutil

    components = [c for c in components if c.proc is not None]
    tree: list[psutil.Process] = []
    for component in components:
        try:
            tree.extend(psutil.Process(component.proc.pid).children(recursive=True))  # type: ignore[union-attr]
        except psutil.Error:
            pass
    for component in components:
        component.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for component in components:
        try:
            component.proc.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pass
    for component in components:
        component.signal_group(signal.SIGKILL)  # stragglers of the group, even when the leader is gone
        try:
            component.proc.wait(5)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pass
        component.close()
    _, alive = psutil.wait_procs(tree, timeout=max(0.1, deadline - time.monotonic()))
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def _health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


class AirflowApiServer:
    """``airflow api-server`` on 127.0.0.1 in its own process group; ``url`` once healthy.

    One worker: start-up dominates test time on small machines, and one process is all a page needs.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int = 0,
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.startup_timeout = startup_timeout
        cmd = [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.component = Component("api-server", [*cmd, "--workers", "1"], self.env, log_path)

    def start(self) -> AirflowApiServer:
        self.component.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.component.running:
                raise RuntimeError(f"airflow api-server exited early:\n{self.component.log_tail()}")
            if _health(self.url) is not None:
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"airflow api-server not healthy after {self.startup_timeout:.0f}s:\n{self.component.log_tail()}"
        )

    def log_tail(self, size: int = 4000) -> str:
        return self.component.log_tail(size)

    def token(self, username: str, password: str) -> str:
        """A JWT from ``POST /auth/token`` (SimpleAuthManager), for ``Authorization: Bearer``."""
        request = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def stop(self) -> None:
        stop_all([self.component], timeout=10)

    def __enter__(self) -> AirflowApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def store_connection(conn_id: str, **fields: Any) -> None:
    """Create or replace a connection in the metadata DB of the current ``AIRFLOW_HOME`` (set it first)."""
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.add(Connection(conn_id=conn_id, **fields))


# ------------------------------------------------------------------------------------------------ make ui


class Stop(Exception):
    """SIGTERM arrived: unwind like Ctrl+C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AGENTCHAT_UI_PORT", 8080)))
    parser.add_argument("--devserver-port", type=int, default=int(os.environ.get("AGENTCHAT_DEVSERVER_PORT", 8088)))
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("AGENTCHAT_UI_HOME", ROOT / "tmp" / "airflow-ui")),
        help="AIRFLOW_HOME to use (default ./tmp/airflow-ui, kept between runs)",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=60.0,
        help="dev server delay before every streamed chunk, so streaming is visible (default 60; 0 turns it off)",
    )
    return parser.parse_args(argv)


def _busy_port(args: argparse.Namespace) -> str | None:
    for port, flag in ((args.port, "--port"), (args.devserver_port, "--devserver-port")):
        if not port_is_free(port):
            return f"make ui: port {port} on 127.0.0.1 is in use; choose another: make ui ARGS='{flag} N'"
    return None


def _login(home: Path) -> dict[str, str]:
    """The admin password, dev key and signing secrets, generated once per home and kept with it."""
    login_file = home / "agentchat_ui_login.json"
    login = json.loads(login_file.read_text()) if login_file.exists() else {}
    for key, make in (
        ("password", lambda: secrets.token_urlsafe(9)),
        ("dev_key", lambda: f"dev-{secrets.token_urlsafe(18)}"),
        ("jwt_secret", lambda: secrets.token_urlsafe(32)),
    ):
        login.setdefault(key, make())
    login_file.write_text(json.dumps(login))
    login_file.chmod(0o600)
    return login


def stack_env(home: Path, port: int, login: Mapping[str, str], dags_folder: Path = ROOT / "dags") -> dict[str, str]:
    """Environment of every component of a stack: LocalExecutor, one JWT secret, free log-server ports."""
    env = airflow_env(home, {"admin": ("admin", login["password"])})
    url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",  # SQLite has one writer; a few task processes are plenty here
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": login["jwt_secret"],  # the same in every component
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",  # agent calls wait in the triggerer
            # Components serve their logs to the API server on these ports; pick free ones so a second Airflow
            # on the machine (or a test run) does not collide with the defaults 8793 / 8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AGENTCHAT_EXAMPLE_OUTPUT_DIR": str(home / "example-output"),
        }
    )
    return env


class AirflowStack:
    """``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` sharing one environment.

    What ``make ui`` runs; tests that need a real scheduler start one per module through this class.
    ``start`` returns the components not healthy yet (empty when all are); ``stop`` stops every process.
    """

    def __init__(self, env: Mapping[str, str], *, port: int, logs: Path, startup_timeout: float = 180) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.api = AirflowApiServer(env, port=port, startup_timeout=startup_timeout, log_path=logs / "api-server.log")
        self.components = [self.api.component] + [
            Component(name, [sys.executable, "-m", "airflow", name], env, logs / f"{name}.log") for name in COMPONENTS
        ]

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> list[str]:
        for component in self.components[1:]:
            component.start()
        self.api.component.start()
        self.api.wait_healthy()
        return _wait_components(self.api, self.components)

    def stop(self) -> None:
        stop_all(self.components)


def _wait_components(api: AirflowApiServer, components: list[Component], timeout: float = 180.0) -> list[str]:
    """Wait until the health endpoint reports every component healthy; return the ones that are not."""
    deadline = time.monotonic() + timeout
    names = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    unhealthy: list[str] = list(names)
    while time.monotonic() < deadline:
        for component in components:
            if not component.running:
                raise RuntimeError(f"airflow {component.name} exited:\n{component.log_tail()}")
        health = _health(api.url) or {}
        unhealthy = [n for n in names if (health.get(n) or {}).get("status") != "healthy"]
        if not unhealthy:
            return []
        time.sleep(1)
    return unhealthy


def main(argv: list[str] | None = None) -> int:
    """Run the dev server and Airflow until Ctrl+C or SIGTERM; return the exit code."""
    args = _parse_args(argv)
    busy = _busy_port(args)
    if busy:
        print(busy, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    home: Path = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "component-logs"
    logs.mkdir(exist_ok=True)
    login = _login(home)
    env = stack_env(home, args.port, login)
    os.environ.update(env)  # this process stores the connection in the same metadata DB

    from airflow_agentchat.devserver import DevServer

    components: list[Component] = []
    dev: DevServer | None = None
    try:
        print(f"Preparing Airflow in {home} ...", flush=True)
        migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True)
        if migrated.returncode:
            print((migrated.stdout + migrated.stderr).decode(errors="replace")[-4000:], file=sys.stderr)
            return migrated.returncode
        dev = DevServer(port=args.devserver_port, api_key=login["dev_key"], chunk_latency_ms=args.chunk_delay_ms)
        dev.start()
        store_connection(
            "agentchat_default",
            conn_type="agentchat",
            host=dev.url,
            password=login["dev_key"],
            description="Offline dev server started by `make ui` (answers 'Echo: <your prompt>').",
        )
        with socket.socket() as sock:  # example_agentchat_failover's primary: nothing listens there
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        store_connection(
            "agentchat_primary",
            conn_type="agentchat",
            host=f"http://127.0.0.1:{closed}",
            extra='{"max_retries": 0}',
            description="A primary agent that is down, for example_agentchat_failover (it fails over).",
        )
        print(f"Dev agent endpoint: {dev.url} (agentchat_default). Starting Airflow ...", flush=True)
        stack = AirflowStack(env, port=args.port, logs=logs)
        api = stack.api
        components.extend(stack.components)
        not_ready = stack.start()
        print(
            "\n"
            f"  Airflow UI:   {api.url}/   (DAGs from {ROOT / 'dags'})\n"
            f"  Agent Chat:   {api.url}/plugin/agent-chat\n"
            f"  Login:        admin / {login['password']}\n"
            f"  Connection:   agentchat_default -> {dev.url}  (Admin > Connections > Test)\n"
            f"  Logs:         {logs}\n"
            + (f"  Not healthy yet: {', '.join(not_ready)} (see the logs)\n" if not_ready else "")
            + "\nPress Ctrl+C to stop (or send SIGTERM); every process started here stops with it.",
            flush=True,
        )
        while all(c.running for c in components):
            time.sleep(0.5)
        stopped = next(c for c in components if not c.running)
        print(f"airflow {stopped.name} stopped; stopping the rest:\n{stopped.log_tail()}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stop):
        print("\nStopping ...", flush=True)
        return 0
    except RuntimeError as exc:  # a component that would not start; DevServerError is one too
        print(f"make ui: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(components)
        if dev is not None:
            dev.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
