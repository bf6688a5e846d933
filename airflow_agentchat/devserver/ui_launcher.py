"""``make ui``: the Airflow UI with the Agent Chat page, a ready ``agentchat_default`` connection and no agent key.

It starts the embedded dev server (an offline agent endpoint that requires a random dev key), prepares a
throw-away ``AIRFLOW_HOME`` (SQLite metadata DB, connection testing enabled, one admin user with a generated
password), stores ``agentchat_default`` pointing at the dev server, starts ``airflow api-server`` (or, with
``--standalone``, ``airflow standalone`` to also run DAGs), prints the URL and the login, and stops everything
on Ctrl+C::

    python -m airflow_agentchat.devserver.ui_launcher [--port 8080] [--devserver-port 8088] [--home DIR]

:class:`AirflowApiServer` and :func:`airflow_env` are reused by the UI tests, which need the same thing: a
real API server on 127.0.0.1 with known users.
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
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["AirflowApiServer", "airflow_env", "free_port", "main"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class AirflowApiServer:
    """``airflow api-server`` on 127.0.0.1 in its own process group; ``url`` once healthy.

    One worker: start-up dominates test time on small machines, and one process is all a page needs.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int = 0,
        command: str = "api-server",
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.port = port or free_port()
        self.command = command
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> AirflowApiServer:
        if self.command == "standalone":
            self.env["AIRFLOW__API__PORT"] = str(self.port)
            self.env["AIRFLOW__API__HOST"] = "127.0.0.1"
            cmd = [sys.executable, "-m", "airflow", "standalone"]
        else:
            cmd = [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--workers", "1"]
        self._log = open(self.log_path, "wb") if self.log_path else tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the server and its children only
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"airflow {self.command} exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"airflow {self.command} not healthy after {self.startup_timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's output (for failure messages)."""
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
        """SIGTERM to the server's process group, SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AGENTCHAT_UI_PORT", 8080)))
    parser.add_argument("--devserver-port", type=int, default=int(os.environ.get("AGENTCHAT_DEVSERVER_PORT", 8088)))
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("AGENTCHAT_UI_HOME", Path.cwd() / "tmp" / "airflow-ui")),
        help="AIRFLOW_HOME to use (default ./tmp/airflow-ui, kept between runs)",
    )
    parser.add_argument("--standalone", action="store_true", help="run `airflow standalone` (scheduler etc. too)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run dev server + Airflow until Ctrl+C."""
    args = _parse_args(argv)
    home: Path = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    login_file = home / "agentchat_ui_login.json"
    login = json.loads(login_file.read_text()) if login_file.exists() else {}
    password = login.get("password") or secrets.token_urlsafe(9)
    dev_key = login.get("dev_key") or f"dev-{secrets.token_urlsafe(18)}"
    login_file.write_text(json.dumps({"password": password, "dev_key": dev_key}))
    login_file.chmod(0o600)

    env = airflow_env(home, {"admin": ("admin", password)})
    dags = Path.cwd() / "dags"
    if dags.is_dir():
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ.update(env)  # before Airflow is imported below

    from airflow_agentchat.devserver import DevServer

    print(f"Preparing Airflow in {home} ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    with DevServer(port=args.devserver_port, api_key=dev_key) as dev:
        store_connection(
            "agentchat_default",
            conn_type="agentchat",
            host=dev.url,
            password=dev_key,
            description="Offline dev server started by `make ui` (answers 'Echo: <your prompt>').",
        )
        command = "standalone" if args.standalone else "api-server"
        print(f"Dev agent endpoint: {dev.url} (agentchat_default); starting airflow {command} ...", flush=True)
        with AirflowApiServer(env, port=args.port, command=command, log_path=home / "api-server.log") as api:
            print(
                "\n"
                f"  Airflow UI:   {api.url}/\n"
                f"  Agent Chat:   {api.url}/plugin/agent-chat   (or the 'Agent Chat' entry in the nav)\n"
                f"  Login:        admin / {password}\n"
                f"  Connection:   agentchat_default -> {dev.url}  (Admin > Connections > Test works too)\n"
                f"  Server log:   {home / 'api-server.log'}\n"
                "\nPress Ctrl+C to stop.",
                flush=True,
            )
            try:
                while api._proc is not None and api._proc.poll() is None:
                    time.sleep(0.5)
                print(f"airflow {command} stopped:\n{api.log_tail()}", file=sys.stderr)
            except KeyboardInterrupt:
                print("\nStopping ...", flush=True)


if __name__ == "__main__":
    main()
