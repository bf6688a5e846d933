"""One long-running service process: its own session, its output in a log file, stopped with everything it forked.

Airflow's task runner moves every task into a process group of its own, so signalling a worker's group leaves
its tasks running. :meth:`Service.stop` and :meth:`Service.kill` therefore collect the whole process tree
*first* (once the parent dies its children are re-parented and can no longer be found from it) and signal
every group in it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil


class ServiceError(RuntimeError):
    """A service exited early or did not become ready in time."""


class Service:
    """``cmd`` started in a new session (its own process group) with stdout+stderr going to ``log_path``."""

    def __init__(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - size))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``ready`` until it is true; fail early when the process exits, with the end of its log."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise ServiceError(f"{self.name} exited before {what}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name}: no {what} after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.25)

    def wait_for_log(self, text: str, timeout: float) -> None:
        self.wait_until(lambda: text in self.log_path.read_text(errors="replace"), repr(text), timeout)

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants, whatever process group or session they moved to."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[int]:
        """SIGKILL the process, its descendants and their process groups at once (a crash); return the pids."""
        procs = self.tree()
        _signal_all(procs, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        return [p.pid for p in procs]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole tree, then SIGKILL whatever is still alive after ``grace`` seconds."""
        procs = self.tree()
        if not procs:
            return
        _signal_all(procs, signal.SIGTERM)
        _gone, alive = psutil.wait_procs(procs, timeout=grace)
        _signal_all(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    groups = set()
    for proc in procs:
        try:
            groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    for group in groups:
        if group in (os.getpgrp(), 0, 1):  # never our own group (the test runner's)
            continue
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
