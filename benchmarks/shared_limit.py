"""Shared rate limit cost: a batch at 3,000 requests/minute with the per-process limiter vs the Redis one.

    .venv/bin/python benchmarks/shared_limit.py            # ~1 minute
    .venv/bin/python benchmarks/shared_limit.py --quick    # smaller numbers, for a smoke check

One dev server subprocess (50 ms latency) and one ``redis-server`` on 127.0.0.1. The same batch
(``max_concurrency=16``, enough to keep the limit busy) runs against two connections that differ only in
``limit_backend_conn_id``: without it the hook paces in-process; with it every attempt also takes its slot
from the moving window in Redis (and reads the shared pause). Rounds are interleaved and medians compared;
target: the shared limiter keeps at least 0.95x the per-process limiter's throughput (``items_per_s``).
Writes the "Shared rate limit" section of RESULTS.md and exits non-zero when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import airflow_env  # noqa: E402

airflow_env()  # before Airflow is imported

from common import machine, write_section  # noqa: E402

RPM = 3000
TARGET = 0.95


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connections(url: str, redis_port: int) -> None:
    base = {"conn_type": "agentchat", "host": url, "password": "sk-bench-not-a-real-key"}
    os.environ["AIRFLOW_CONN_BENCH_LOCAL"] = json.dumps({**base, "extra": {"requests_per_minute": RPM}})
    shared = {"requests_per_minute": RPM, "limit_backend_conn_id": "bench_redis"}
    os.environ["AIRFLOW_CONN_BENCH_SHARED"] = json.dumps({**base, "extra": shared})
    os.environ["AIRFLOW_CONN_BENCH_REDIS"] = json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": redis_port})


def _run(conn_id: str, n: int, tag: str) -> float:
    """Items per second of one batch (the engine's own figure: sent / time spent sending)."""
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    out = f"file://{Path(tempfile.mkdtemp(prefix='agentchat-bench-')) / 'out.jsonl'}"
    op = AgentChatBatchOperator(
        task_id=f"limit_{tag}",
        agentchat_conn_id=conn_id,
        prompts=[f"Summarise item {i} of {tag}." for i in range(n)],
        output_path=out,
        max_concurrency=16,
        progress_interval=3600,
    )
    summary = op.execute({"ti": None})  # type: ignore[arg-type]
    if summary["succeeded"] != n:
        raise SystemExit(f"batch lost items: {summary}")
    return float(summary["items_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if not shutil.which("redis-server"):
        print("redis-server not found (apt-get install redis-server): shared rate limit benchmark skipped")
        return 0
    n, rounds = (200, 1) if args.quick else (500, 3)

    from airflow_agentchat.devserver import DevServer

    port = _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        with DevServer(latency_ms=50) as server:
            _connections(server.url, port)
            _run("bench_local", 50, "warm-local")
            _run("bench_shared", 50, "warm-shared")
            local, shared = [], []
            for r in range(rounds):
                local.append(_run("bench_local", n, f"local{r}"))
                shared.append(_run("bench_shared", n, f"shared{r}"))
    finally:
        redis.kill()
        redis.wait()
    local_rate, shared_rate = statistics.median(local), statistics.median(shared)
    ratio = shared_rate / local_rate
    ok = ratio >= TARGET
    body = f"""{machine()}; `benchmarks/shared_limit.py`{" --quick" if args.quick else ""}.

A batch of {n} prompts at the connection's `requests_per_minute={RPM}` ({RPM / 60:.0f} a second), dev server
latency 50 ms, `max_concurrency=16`; median of {rounds} interleaved round(s). The same run measures both
limiters: per-process (no `limit_backend_conn_id`) and shared (every attempt also takes its slot from the
moving window in Redis and reads the shared pause).

| limiter | items/s | share of the limit |
|---|---|---|
| per-process | {local_rate:.1f} | {local_rate / (RPM / 60):.2f} |
| shared (Redis) | {shared_rate:.1f} | {shared_rate / (RPM / 60):.2f} |

Shared / per-process: **{ratio:.3f}** (target >= {TARGET}) {"OK" if ok else "MISSED"}. The shared window grants
0.96 of the limit (a margin for the time between a grant and the request's arrival), the per-process pacer 0.98.
"""
    print(body)
    write_section("Shared rate limit", body)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
