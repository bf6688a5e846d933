"""Shared set-up for benchmarks: a throw-away Airflow env, the dev server, and a results writer."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def airflow_env() -> dict[str, str]:
    """Environment for a benchmark: temp AIRFLOW_HOME, no examples (set before Airflow is imported)."""
    env = {
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME") or tempfile.mkdtemp(prefix="agentchat-bench-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return env


def use_connection(conn_id: str, url: str) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "agentchat", "host": url})


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
        cpu = model.strip()
    except (OSError, AttributeError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {system}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_section(title: str, body: str) -> None:
    """Replace (or add) the ``## title`` section of RESULTS.md, leaving the other benchmarks' sections alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nRun all: `make bench`.\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")


def run_python(code: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *(args or []), "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout + proc.stderr
