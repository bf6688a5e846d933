"""Scale-out on a real distributed engine: the sharded batch example on two Celery workers, S3 on moto.

One environment for the module (:mod:`scaleout`): Redis, moto's S3 server, the dev agent, Airflow's
api-server, scheduler, dag-processor and two Celery workers with two slots each, all on 127.0.0.1. Two runs of
``example_agentchat_batch`` with 4 shards x 500 items:

1. a clean run: shards on both workers, complete output, one rate limit for the agent measured at the server;
2. a run where one worker is killed with SIGKILL (with the task processes it runs) while it runs a shard: the
   shard's retry runs on the other worker and resumes from the parts in S3.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import time
from collections import Counter
from typing import Any

import pytest
from suite import CANARY_KEY

pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        not shutil.which("redis-server") and not os.environ.get("CI"),
        reason="needs Debian's redis-server (.ci/run installs it)",
    ),
    pytest.mark.serial,  # judges how much of the agent's limit the shards use
]

ITEMS, SHARDS = 2000, 4
# The agent's limit, shared by the shards. Low enough that the run lasts ~40 s, so the few seconds by which
# Celery starts the shards apart on a busy 2-core machine do not dominate the share of the limit used.
LIMIT_RPM = 3000
MAX_CONCURRENCY = 16  # max_concurrency of example_agentchat_batch: requests in flight per shard
WINDOW = 10.0


@pytest.fixture(scope="module")
def env():
    from scaleout import ScaleOutEnv

    with ScaleOutEnv(workers=2, worker_concurrency=2, latency_ms=50, api_key=CANARY_KEY) as env:
        yield env


def _conf(name: str) -> dict[str, Any]:
    from scaleout import BUCKET, STORAGE_CONN_ID

    # A plain s3:// URI: the credentials and the endpoint come from the storage connection.
    return {
        "items": ITEMS,
        "shards": SHARDS,
        "base_path": f"s3://{BUCKET}/{name}",
        "storage_conn_id": STORAGE_CONN_ID,
        "requests_per_minute": LIMIT_RPM,
    }


def _outputs(env, run_id: str) -> tuple[list[dict], list[dict[str, Any]]]:
    """The mapped tasks' summaries and every line of every shard output."""
    summaries = [env.xcom(run_id, "ask_agent", i) for i in range(SHARDS)]
    lines = []
    for summary in summaries:
        key = summary["output_path"].split(f"{_bucket()}/", 1)[1]
        lines += [json.loads(raw) for raw in env.read(key).splitlines()]
    return summaries, lines


def _bucket() -> str:
    from scaleout import BUCKET

    return BUCKET


def _max_in_window(stamps: list[float], width: float) -> int:
    """The most requests that arrived within any window of ``width`` seconds."""
    return max((bisect.bisect_left(stamps, t + width) - i for i, t in enumerate(stamps)), default=0)


def _check_rate(stamps: list[float]) -> float:
    """No window above the agent's limit; return the share of the limit used from first to last request."""
    stamps = sorted(stamps)
    per_window = LIMIT_RPM * WINDOW / 60
    busiest = _max_in_window(stamps, WINDOW)
    assert busiest <= per_window, f"{busiest} requests in a {WINDOW:.0f} s window, limit {per_window:.0f}"
    return len(stamps) / ((stamps[-1] - stamps[0]) * LIMIT_RPM / 60)


@pytest.fixture(scope="module")
def clean_run(env):
    env.devserver.reset()
    run_id = env.trigger(_conf("clean"))
    state = env.wait_run(run_id)
    assert state == "success", env.logs()
    return run_id, env.devserver.stats()


def test_shards_run_on_both_workers_and_the_output_is_complete(env, clean_run):
    run_id, stats = clean_run
    shards = env.task_instances(run_id, "ask_agent")
    assert sorted(ti["map_index"] for ti in shards) == list(range(SHARDS))
    assert {ti["state"] for ti in shards} == {"success"}
    assert {ti["hostname"] for ti in shards} == {"worker-1", "worker-2"}

    summaries, lines = _outputs(env, run_id)
    ids = Counter(line["id"] for line in lines)
    assert len(ids) == ITEMS and set(ids.values()) == {1}, "every id exactly once"
    assert ids.keys() == {f"ticket-{i:05d}" for i in range(ITEMS)}
    assert {line["status"] for line in lines} == {"ok"}
    assert sum(s["succeeded"] for s in summaries) == ITEMS
    assert stats["by_status"] == {"200": ITEMS}, "one request per item, nothing paid twice"
    assert env.xcom(run_id, "summarise")["lines"] == ITEMS  # the final task read every shard output back
    assert not [k for k in env.keys("clean/") if ".parts/" in k], "parts are deleted once composed"


def test_the_key_stays_out_of_storage_and_task_logs(env, clean_run):
    run_id, _ = clean_run
    for key in env.keys("clean/"):
        assert CANARY_KEY.encode() not in env.read(key), key
    logs = [p for p in (env.home / "logs").rglob("*") if p.is_file() and "run_id=" + run_id in str(p)]
    assert logs, "task logs were written"
    for path in logs:
        assert CANARY_KEY not in path.read_text(errors="replace"), path


def test_the_shards_share_one_rate_limit(env, clean_run):
    run_id, stats = clean_run
    used = _check_rate(stats["timestamps"])
    assert used >= 0.9, f"only {used:.0%} of the agent's limit used"
    shares = [env.xcom(run_id, "ask_agent", i)["rate_share"] for i in range(SHARDS)]
    assert all(s["shards_at_once"] == SHARDS and s["requests_per_minute"] == LIMIT_RPM / SHARDS for s in shares)


def test_a_killed_worker_s_shard_resumes_on_the_other_worker(env, clean_run):
    env.devserver.reset()
    run_id = env.trigger(_conf("failover"))
    victim, killed = _kill_a_worker_mid_shard(env, run_id)
    survivor = ({"worker-1", "worker-2"} - {victim}).pop()

    state = env.wait_run(run_id)
    assert state == "success", env.logs()
    for map_index in killed:
        tries = env.tries(run_id, "ask_agent", map_index)
        assert tries[0]["hostname"] == victim
        assert tries[-1]["hostname"] == survivor and tries[-1]["state"] == "success"
    summaries, lines = _outputs(env, run_id)
    ids = Counter(line["id"] for line in lines)
    assert len(ids) == ITEMS and set(ids.values()) == {1}, "every id exactly once"
    assert {line["status"] for line in lines} == {"ok"}
    for map_index in killed:
        assert summaries[map_index]["resumed"] >= ITEMS / SHARDS / 5, "the retry resumed from the killed try's parts"

    stats = env.devserver.stats()
    paid_twice = sum(n - 1 for n in stats["by_prompt"].values() if n > 1)
    per_shard_rps = LIMIT_RPM / SHARDS / 60
    bound = len(killed) * (MAX_CONCURRENCY + per_shard_rps * 1.0)  # in flight + one second of results
    print(f"failover: killed {victim} running shards {killed}; {paid_twice} answers paid twice (bound {bound:.0f})")
    for map_index in killed:
        for t in env.tries(run_id, "ask_agent", map_index):
            print(" ", map_index, t["try_number"], t["hostname"], t["state"], t["start_date"], t["end_date"])
        print("  resumed", summaries[map_index]["resumed"], "sent", summaries[map_index]["sent"])
    assert paid_twice <= bound, f"{paid_twice} answers paid twice, at most {bound:.0f} expected"
    _check_rate(stats["timestamps"])


def _kill_a_worker_mid_shard(env, run_id: str, timeout: float = 300.0) -> tuple[str, list[int]]:
    """Wait until every shard running on a worker has a fifth of its results in S3, then kill that worker.

    Returns the worker and the shards it was running.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved: Counter[int] = Counter()
        for key in env.keys("failover/"):
            if ".parts/part-" in key:  # .../tickets-00001-of-00004.results.jsonl.parts/part-... -> shard 1
                shard = int(key.split(".results.jsonl.parts/")[0].rsplit("-", 3)[-3])
                saved[shard] += env.read(key).count(b"\n")
        running: dict[str, list[int]] = {}
        for ti in env.task_instances(run_id, "ask_agent"):
            if ti["state"] == "running":
                running.setdefault(ti["hostname"], []).append(ti["map_index"])
        for worker, shards in sorted(running.items()):
            if all(saved[shard] >= ITEMS / SHARDS / 5 for shard in shards):
                env.kill_worker(worker)
                return worker, sorted(shards)
        time.sleep(0.2)
    raise AssertionError(f"no worker whose shards had results in S3:\n{env.logs()}")
