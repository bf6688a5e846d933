"""An offline, OpenAI-compatible agent chat completions endpoint for demos and tests.

``DevServer`` runs the server in a **subprocess** (so a benchmark client and the server do not share a GIL)
on 127.0.0.1 and drives its ``/_dev`` control API::

    from airflow_agentchat.devserver import DevServer

    with DevServer() as server:                      # picks a free port
        client = openai.OpenAI(base_url=f"{server.url}/api/v1", api_key="x")
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        # -> "Echo: hi"
        server.add_faults([{"kind": "429", "retry_after": 1, "times": 2}])
        server.stats()["by_status"]
        server.reset()

The answer rule lives in :mod:`.answers`, fault specs and ``[[fault:...]]`` markers in :mod:`.faults`, the
routes in :mod:`.app`. This module stays import-light: FastAPI and uvicorn are only imported in the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["DevServer", "DevServerError"]

_READY_PREFIX = "agentchat devserver listening on "


class DevServerError(RuntimeError):
    """The dev server did not start, or a control call failed."""


class DevServer:
    """Start ``python -m airflow_agentchat.devserver`` in a subprocess and talk to its control API.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``url`` is ``http://127.0.0.1:PORT``
    (append ``/api/v1`` for an OpenAI SDK ``base_url``).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str | None = None,
        latency_ms: float = 0.0,
        chunk_latency_ms: float = 0.0,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = port
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.chunk_latency_ms = chunk_latency_ms
        self.startup_timeout = startup_timeout
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> DevServer:
        """Spawn the server, read its port from the startup line and wait until ``/_dev/health`` answers."""
        if self._proc is not None:
            return self
        cmd = [sys.executable, "-m", "airflow_agentchat.devserver", "--port", str(self.port)]
        cmd += ["--latency-ms", str(self.latency_ms), "--chunk-latency-ms", str(self.chunk_latency_ms)]
        env = dict(os.environ)
        env.pop("AGENTCHAT_DEVSERVER_KEY", None)
        if self.api_key:
            env["AGENTCHAT_DEVSERVER_KEY"] = self.api_key  # not on the command line, where ps shows it
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, text=True, env=env
        )
        try:
            self.url = self._read_url()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_url(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.startup_timeout)
        line = found[0].strip() if found else ""
        if not line.startswith(_READY_PREFIX):
            raise DevServerError(f"dev server did not start: {line or 'no startup line'}; {self._stderr_tail()}")
        return line[len(_READY_PREFIX) :]

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                if self._call("GET", "/_dev/health").get("status") == "ok":
                    return
            except (OSError, DevServerError):
                pass
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                raise DevServerError(f"dev server at {self.url} never became healthy; {self._stderr_tail()}")
            time.sleep(0.02)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return "no stderr"
        try:
            self._stderr.seek(0)
            return "stderr: " + self._stderr.read()[-2000:].strip()
        except (OSError, ValueError):
            return "stderr unavailable"

    def stop(self) -> None:
        """Terminate the subprocess (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------- control API

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``{url}/api/v1``."""
        return f"{self.url}/api/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        if not self.url:
            raise DevServerError("dev server is not running")
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise DevServerError(f"{method} {path} failed: HTTP {exc.code} {exc.read()[:500]!r}") from exc

    def stats(self, timestamps: bool = True) -> dict[str, Any]:
        """``GET /_dev/stats``: total, by_status, by_prompt, timestamps (unless False), faults_delivered."""
        return self._call("GET", "/_dev/stats" + ("" if timestamps else "?timestamps=false"))

    def reset(self) -> None:
        """``POST /_dev/reset``: clear stats and pending faults."""
        self._call("POST", "/_dev/reset", {})

    def add_faults(self, faults: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        """``POST /_dev/faults``: queue fault specs (see :mod:`airflow_agentchat.devserver.faults`)."""
        return self._call("POST", "/_dev/faults", faults)

    def pending_faults(self) -> list[dict[str, Any]]:
        """``GET /_dev/faults``: specs not yet used up."""
        return self._call("GET", "/_dev/faults")["pending"]

    def configure(self, **settings: Any) -> dict[str, Any]:
        """``POST /_dev/config``: ``latency_ms``, ``chunk_latency_ms``, ``api_key`` (None turns auth off)."""
        return self._call("POST", "/_dev/config", settings)
