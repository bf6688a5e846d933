"""Split a JSONL input into shard files, one per mapped batch task.

When one worker is not enough, a DAG fans out with dynamic task mapping::

    shards = task(split_jsonl)(input_path="s3://bucket/prompts.jsonl", num_shards=8)
    AgentChatBatchOperator.partial(task_id="ask", ...).expand(input_path=shards)

The split is *deterministic* (contiguous runs of lines, same input -> same shards), so a retried split task
rewrites identical shards and each mapped batch task can still resume from its own output.
"""

from __future__ import annotations

import math
from typing import Any

from airflow_agentchat.compat import file_lines


def split_jsonl(
    input_path: str | Any,
    output_dir: str | Any | None = None,
    *,
    num_shards: int | None = None,
    shard_size: int | None = None,
    storage_conn_id: str | None = None,
) -> list[str]:
    """Split ``input_path`` (any ``ObjectStoragePath`` URI) into shards and return their URIs, in order.

    :param input_path: the JSONL file; blank lines are dropped, every other line is copied as it is.
    :param output_dir: where shards go; default ``<input_path>.shards/`` next to the input.
    :param num_shards: how many shards (at most one per line); give this or ``shard_size``.
    :param shard_size: lines per shard (the last one may be shorter).
    :param storage_conn_id: the Airflow connection with the storage credentials (e.g. an ``aws`` connection
        for ``s3://``); the returned URIs carry it (``s3://conn_id@bucket/...``), so the mapped tasks use it too.
    :return: shard URIs (``<stem>-00000-of-00008.jsonl``, ...), ready for ``.expand(input_path=...)``.
    """
    from airflow_agentchat.batch.items import count_jsonl
    from airflow_agentchat.batch.store import to_path

    if (num_shards is None) == (shard_size is None):
        raise ValueError("give exactly one of num_shards or shard_size")
    if num_shards is not None and num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    if shard_size is not None and shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    source = to_path(input_path, storage_conn_id)
    target = to_path(output_dir, storage_conn_id) if output_dir is not None else source.parent / f"{source.name}.shards"
    lines = count_jsonl(source)
    if shard_size is None:
        shard_size = max(1, math.ceil(lines / (num_shards or 1))) if lines else 1
    count = max(1, math.ceil(lines / shard_size))
    if target.protocol in ("file", "local", ""):
        target.mkdir(parents=True, exist_ok=True)
    stem = source.name.removesuffix(".jsonl").removesuffix(".ndjson")
    uris: list[str] = []
    handle: Any = None  # an fsspec file, opened at the first line of each shard
    written = shard_size  # forces the first shard to open
    try:
        with source.open("rb") as reader:
            for raw in file_lines(reader):
                if not raw.strip():
                    continue
                if written >= shard_size:
                    if handle is not None:
                        handle.close()
                    shard = target / f"{stem}-{len(uris):05d}-of-{count:05d}.jsonl"
                    handle = shard.open("wb")
                    uris.append(str(shard))
                    written = 0
                handle.write(raw if raw.endswith(b"\n") else raw + b"\n")
                written += 1
    finally:
        if handle is not None:
            handle.close()
    if not uris:  # an empty input still gives one (empty) shard, so the mapped task runs and reports 0
        shard = target / f"{stem}-00000-of-00001.jsonl"
        shard.write_bytes(b"")
        uris.append(str(shard))
    return uris


def shards_at_once(ti: Any, limited: bool, max_per_dagrun: Any, max_per_dag: Any) -> int:
    """How many task instances of a (mapped) batch task can send at once: the divisor of the agent's limits.

    1 when the task is not mapped or nothing is limited; else the number of mapped task instances in this run,
    capped by ``max_active_tis_per_dagrun`` and ``max_active_tis_per_dag``. Static shares keep every window under
    the limit however the shards overlap; to use the whole limit, let that many shards run at once (worker slots,
    pools), or set ``max_active_tis_per_dagrun`` to the number that really can, or share the limit through a
    backend (``limit_backend_conn_id``).
    """
    map_index = getattr(ti, "map_index", None)
    if ti is None or not isinstance(map_index, int) or map_index < 0 or not limited:
        return 1
    mapped = ti.get_ti_count(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id])
    caps = [int(c) for c in (mapped, max_per_dagrun, max_per_dag) if c]
    return max(1, min(caps, default=1))


def static_share_warning(conn_id: str, rpm: float | None, tpm: float | None, shards: int) -> str:
    """What a task says when its shards split the connection's limits statically (no backend to split them by
    demand)."""
    limits = " and ".join(f"{value} {unit}/minute" for value, unit in ((rpm, "requests"), (tpm, "tokens")) if value)
    return (
        f"Connection {conn_id!r} limits the agent to {limits}, but names no limit_backend_conn_id: each of the "
        f"{shards} shards that may run at once paces at 1/{shards} of it, and a shard that finishes early leaves its "
        "share unused; tasks of other DAGs are not counted. Set limit_backend_conn_id to a redis connection to "
        "share one limit by demand (docs/scale-out.md)."
    )
