"""Run the sharded batch example in a :class:`~scaleout.env.ScaleOutEnv` and describe what happened.

Shared by ``make scale-demo`` (dev/scale_demo.py) and the scale-out benchmark: which worker ran each shard,
throughput measured two ways, and where the results are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scaleout.env import BUCKET, STORAGE_CONN_ID, ScaleOutEnv


@dataclass
class ShardRun:
    map_index: int
    workers: list[str]  # one per try
    state: str
    items: int
    resumed: int
    elapsed_s: float
    output_path: str


@dataclass
class RunReport:
    run_id: str
    state: str
    items: int
    shards: list[ShardRun] = field(default_factory=list)
    shards_s: float = 0.0  # first shard start to last shard end (task start-up included)
    agent_s: float = 0.0  # first to last request at the agent
    requests: int = 0
    folder: str = ""
    final: dict[str, Any] = field(default_factory=dict)  # the example's summarise task: totals read back

    @property
    def items_per_s(self) -> float:
        """Items over the mapped tasks' wall time (what a DAG run sees)."""
        return self.items / self.shards_s if self.shards_s else 0.0

    @property
    def agent_rps(self) -> float:
        """Requests per second at the agent while the shards were sending."""
        return self.requests / self.agent_s if self.agent_s else 0.0


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_example(env: ScaleOutEnv, name: str, *, items: int, shards: int, timeout: float = 1800.0) -> RunReport:
    """Trigger ``example_agentchat_batch`` with its files under ``s3://BUCKET/name``, wait, and report."""
    assert env.devserver is not None
    env.devserver.reset()
    conf = {"items": items, "shards": shards, "base_path": f"s3://{BUCKET}/{name}", "storage_conn_id": STORAGE_CONN_ID}
    run_id = env.trigger(conf)
    report = RunReport(run_id=run_id, state=env.wait_run(run_id, timeout), items=items)
    report.folder = f"s3://{BUCKET}/{name}/{run_id}/"
    if report.state == "success":
        report.final = env.xcom(run_id, "summarise")
    mapped = sorted(env.task_instances(run_id, "ask_agent"), key=lambda ti: ti["map_index"])
    starts, ends = [], []
    for ti in mapped:
        tries = env.tries(run_id, "ask_agent", ti["map_index"])
        summary = env.xcom(run_id, "ask_agent", ti["map_index"]) if ti["state"] == "success" else {}
        report.shards.append(
            ShardRun(
                map_index=ti["map_index"],
                workers=[t["hostname"] or "?" for t in tries],
                state=ti["state"],
                items=summary.get("total", 0),
                resumed=summary.get("resumed", 0),
                elapsed_s=ti.get("duration") or 0.0,
                output_path=summary.get("output_path", ""),
            )
        )
        starts += [_time(t["start_date"]) for t in tries if t.get("start_date")]
        ends += [_time(t["end_date"]) for t in tries if t.get("end_date")]
    if starts and ends:
        report.shards_s = max(ends) - min(starts)
    stamps = env.devserver.stats()["timestamps"]
    report.requests = len(stamps)
    if len(stamps) > 1:
        report.agent_s = max(stamps) - min(stamps)
    return report


def describe(report: RunReport, env: ScaleOutEnv) -> str:
    """A few lines for a person: shards and workers, throughput, where the results are."""
    lines = [f"Run {report.run_id}: {report.state}"]
    for shard in report.shards:
        tries = " -> ".join(shard.workers)
        resumed = f", {shard.resumed} resumed from parts" if shard.resumed else ""
        lines.append(
            f"  shard {shard.map_index}: {tries:<20} {shard.state:<8} {shard.items} items in "
            f"{shard.elapsed_s:.1f} s{resumed}"
        )
    lines.append(
        f"Throughput: {report.items} items in {report.shards_s:.1f} s of mapped tasks = {report.items_per_s:.1f} "
        f"items/s; at the agent {report.requests} requests in {report.agent_s:.1f} s = {report.agent_rps:.1f}/s"
    )
    if report.final:
        lines.append(f"Final task read back {report.final['lines']} result lines ({report.final['succeeded']} ok)")
    lines.append(f"Results: {report.folder} (S3 endpoint {env.s3_url}, connection {STORAGE_CONN_ID})")
    lines += [f"  {shard.output_path}" for shard in report.shards if shard.output_path]
    return "\n".join(lines)
