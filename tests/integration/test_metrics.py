"""Metrics reach a real StatsD server (a UDP socket on 127.0.0.1) from ``airflow dags test``.

The names and values are the documented ones (README, docs/operations.md), and the token counters equal the
usage the tasks pushed to XCom."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections import defaultdict
from pathlib import Path

from suite import AIRFLOW_HOME, CANARY_KEY

DAG_ID = "agentchat_ops_cases"
PROMPTS = [f"metrics item {i}" for i in range(12)]


class StatsdListener:
    """A StatsD server: collects ``name:value|type`` lines from UDP packets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode("utf-8", "replace").splitlines())

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def counters(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("c"):
                totals[name] += int(float(value))
        return totals

    def timers(self) -> dict[str, list[float]]:
        found: dict[str, list[float]] = defaultdict(list)
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("ms"):
                found[name].append(float(value))
        return found


def prepare_input() -> Path:
    folder = AIRFLOW_HOME / "ops_cases"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "input.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return folder


def test_documented_metrics_arrive_with_the_usage_in_xcom(run_dag, devserver):
    devserver.reset()
    prepare_input()
    with StatsdListener() as statsd:
        env = {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }
        xcoms = run_dag(DAG_ID, env=env)
    counters, timers = statsd.counters(), statsd.timers()
    assert CANARY_KEY not in "\n".join(statsd.lines)

    single = xcoms[("single", -1, "usage")]
    batch = xcoms[("batch", -1, "usage")]
    parts = {
        "single": ".agentchat_default.agentchat_ops_cases.single",
        "batch": ".agentchat_default.agentchat_ops_cases.batch",
    }
    # Per task, with conn id, dag id and task id as name parts (plain StatsD drops tags).
    assert counters[f"airflow.agentchat.requests{parts['single']}.ok"] == 1
    assert counters[f"airflow.agentchat.requests{parts['batch']}.ok"] == len(PROMPTS)
    for task, usage in (("single", single), ("batch", batch)):
        assert counters[f"airflow.agentchat.prompt_tokens{parts[task]}"] == usage["prompt_tokens"] > 0
        assert counters[f"airflow.agentchat.completion_tokens{parts[task]}"] == usage["completion_tokens"] > 0
    # The batch caches its shared system prompt: the cache counters equal the cache usage in XCom.
    assert counters[f"airflow.agentchat.cache_read_tokens{parts['batch']}"] == batch["cache_read_input_tokens"] > 0
    assert counters[f"airflow.agentchat.cache_created_tokens{parts['batch']}"] == batch["cache_created_input_tokens"]
    assert batch["cache_created_input_tokens"] > 0
    assert f"airflow.agentchat.cache_read_tokens{parts['single']}" not in counters  # nothing marked there
    assert len(timers[f"airflow.agentchat.latency{parts['single']}"]) == 1
    assert len(timers[f"airflow.agentchat.latency{parts['batch']}"]) == len(PROMPTS)
    # And the totals under the plain names (what tag-aware backends group by tags).
    assert counters["airflow.agentchat.requests"] == 1 + len(PROMPTS)
    assert counters["airflow.agentchat.prompt_tokens"] == single["prompt_tokens"] + batch["prompt_tokens"]
    assert counters["airflow.agentchat.completion_tokens"] == single["completion_tokens"] + batch["completion_tokens"]
    assert len(timers["airflow.agentchat.latency"]) == 1 + len(PROMPTS)
    assert "airflow.agentchat.retries" not in counters  # no request needed a retry


def test_retries_and_error_outcomes_are_counted(run_dag, devserver):
    devserver.reset()
    prepare_input()
    # Two 503s: the single request is retried twice; one batch item fails for good (400 is not retried).
    devserver.add_faults(
        [{"kind": "503", "times": 2, "match": "metrics for one request"}, {"kind": "400", "match": PROMPTS[3]}]
    )
    with StatsdListener() as statsd:
        env = {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        }
        run_dag(DAG_ID, env=env, check=False)
    counters = statsd.counters()
    assert counters["airflow.agentchat.retries"] == 2
    assert counters["airflow.agentchat.retries.agentchat_default.agentchat_ops_cases.single"] == 2
    batch = "airflow.agentchat.requests.agentchat_default.agentchat_ops_cases.batch"
    assert counters[f"{batch}.ok"] == len(PROMPTS) - 1
    assert counters[f"{batch}.api_error"] == 1, counters


def test_nothing_is_emitted_when_metrics_are_off(run_dag, devserver):
    devserver.reset()
    prepare_input()
    with StatsdListener() as statsd:
        env = {
            "AIRFLOW__METRICS__STATSD_ON": "False",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        }
        xcoms = run_dag(DAG_ID, env=env)
    assert xcoms[("batch", -1, "return_value")]["succeeded"] == len(PROMPTS)
    assert statsd.lines == []
