"""The batch under a hostile environment: injected faults, SIGKILL, two tasks on one output, unwritable outputs.

Everything runs against :class:`fault_server.FaultServer` (not the dev server), and where Airflow itself is
part of the story (kills, two tasks at once, the 1,000-item fault mix) through real ``airflow dags test`` /
``airflow tasks test`` processes. Assertions compare the output files with what the server counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_server import FaultServer
from suite import CANARY_KEY

from airflow_agentchat.batch.store import iter_records


def airflow(args: list[str], server: FaultServer, **popen: object) -> subprocess.Popen:
    """Start ``airflow <args>`` with ``agentchat_faults`` pointing at ``server`` (its own process group)."""
    env = os.environ.copy()
    conn = {"conn_type": "agentchat", "host": server.url, "password": CANARY_KEY}
    env["AIRFLOW_CONN_AGENTCHAT_FAULTS"] = json.dumps(conn)
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"airflow did not finish in {timeout} s:\n{out[-6000:]}") from None
    return out


def write_items(path: Path, prompts: list[str], **extra: object) -> None:
    path.write_text("".join(json.dumps({"id": f"i{n}", "prompt": p, **extra}) + "\n" for n, p in enumerate(prompts)))


def recorded(folder: Path, name: str = "out.jsonl") -> dict[str, int]:
    """Ids (with their line counts) in the output and every part left next to it."""
    from airflow.sdk import ObjectStoragePath

    counts: dict[str, int] = {}
    files = [folder / name] if (folder / name).exists() else []
    for path in [*files, *sorted((folder / f"{name}.parts").glob("part-*"))]:
        for _line, record in iter_records(ObjectStoragePath(f"file://{path}")):
            counts[record["id"]] = counts.get(record["id"], 0) + 1
    return counts


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- 1,000 items, 20% faults, Airflow


def test_thousand_items_with_a_fifth_faulted_all_succeed_in_the_first_run(airflow_db, fault_server, tmp_path):
    fault_server.fault_rate = 0.2
    n = 1000
    prompts = [f"fault item {i}" for i in range(n)]
    source = tmp_path / "input.jsonl"
    # every fourth item streams, so the stream faults (break, truncation, bad event) meet the folding hook
    source.write_text(
        "".join(
            json.dumps({"id": f"f{i}", "prompt": p, **({"stream": True} if i % 4 == 0 else {})}) + "\n"
            for i, p in enumerate(prompts)
        )
    )
    conf = {"input_path": f"file://{source}", "output_path": f"file://{tmp_path}/out.jsonl"}
    log = finish(
        airflow(["dags", "test", "agentchat_batch_faults", "2026-05-01", "-c", json.dumps(conf)], fault_server)
    )
    seen = fault_server.snapshot()
    assert sum(seen["injected"].values()) > 150 and set(seen["injected"]) == set(fault_server.faults), seen["injected"]

    out = lines_of(tmp_path / "out.jsonl")
    ids = [line["id"] for line in out]
    assert len(ids) == len(set(ids)) == n, f"{len(ids)} lines, {len(set(ids))} ids"
    failed = [line for line in out if line["status"] != "ok"]
    assert failed == [], failed[:3]
    assert {line["text"] for line in out} == {f"Echo: {p}" for p in prompts}
    assert "Batch summary" in log and CANARY_KEY not in log

    # every request the server saw is counted in some line's attempts, and no more
    assert sum(line["attempts"] for line in out) == sum(seen["counts"].values())
    assert all(seen["counts"][f"fault item {line['id'][1:]}"] == line["attempts"] for line in out)

    # nothing was sent while a 429's retry-after was running (requests already on the wire may land in the
    # first 250 ms after the 429 left the server, before the batch could have read it)
    arrivals = sorted(t for t, _ in seen["arrivals"])
    inside = [
        (round(at - sent, 3), seconds)
        for sent, seconds in seen["pauses"]
        for at in arrivals
        if sent + 0.25 <= at < sent + seconds
    ]
    assert seen["pauses"] and inside == []


# -------------------------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("protocol", ["file", "objtest"])
def test_sigkill_with_default_settings_loses_only_answers_in_flight(airflow_db, fault_server, tmp_path, protocol):
    """Killed mid-batch with the default settings, then rerun: nothing recorded is paid for again.

    On ``file://`` results are appended as they arrive, so only the answers in flight (at most one per worker,
    8) are paid twice. ``objtest://`` cannot append, like an object store: it may also lose the results of the
    last flush interval (1 s by default; counted generously as the answers of the last 1.5 s before the kill).
    """
    fault_server.latency = 0.1  # 8 workers: ~80 answers a second, so 300 answers take ~4 s (under the old 5 s flush)
    n, kill_after, workers = 600, 300, 8
    prompts = [f"kill item {i}" for i in range(n)]
    write_items(tmp_path / "input.jsonl", prompts)
    conf = {"input_path": f"file://{tmp_path}/input.jsonl", "output_path": f"{protocol}://{tmp_path}/out.jsonl"}
    args = ["dags", "test", "agentchat_batch_kill", "2026-05-02", "-c", json.dumps(conf)]

    proc = airflow(args, fault_server)
    try:
        deadline = time.monotonic() + 120
        while len(fault_server.answered) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole worker: task runner and supervisor alike
        killed_at = time.time()
    finally:
        log = finish(proc)
    assert proc.returncode == -signal.SIGKILL, log[-4000:]
    assert not (tmp_path / "out.jsonl").exists(), "the batch finished before it was killed; the test proves nothing"
    before = fault_server.snapshot()
    answered = {prompt for _, prompt in before["answered"]}
    assert kill_after <= len(answered) < n

    kept = recorded(tmp_path)
    assert all(count == 1 for count in kept.values())
    lost = answered - {prompts[int(item_id[1:])] for item_id in kept}
    last_second = sum(1 for at, _ in before["answered"] if at >= killed_at - 1.5)
    allowed = workers if protocol == "file" else workers + last_second
    assert len(lost) <= allowed, (len(lost), allowed, len(kept), len(answered))

    log = finish(airflow(args, fault_server))
    assert "Resuming" in log and "Batch summary" in log, log[-4000:]
    after = fault_server.snapshot()["counts"]
    for item_id in kept:  # nothing that was recorded was requested again
        assert after[prompts[int(item_id[1:])]] == 1, item_id
    paid_twice = [p for p in answered if after[p] > 1]
    assert sorted(paid_twice) == sorted(lost)
    out = lines_of(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in out) == sorted(f"i{i}" for i in range(n))  # every id exactly once
    assert all(line["status"] == "ok" for line in out)
    assert not list(tmp_path.glob("out.jsonl.parts/*")) and not (tmp_path / "out.jsonl.lease").exists()
    assert CANARY_KEY not in log and CANARY_KEY not in (tmp_path / "out.jsonl").read_text()


# ------------------------------------------------------------------------------------ two tasks, one output


def test_second_task_on_the_same_output_is_refused_before_sending(airflow_db, fault_server, tmp_path):
    # writer_a gets 40 answers, then its requests hang until writer_b has been refused
    fault_server.hold_after, fault_server.hold_prefix = 40, "writer a"
    n = 240
    a = [f"writer a item {i}" for i in range(n)]
    b = [f"writer b item {i}" for i in range(n)]
    write_items(tmp_path / "a.jsonl", a)
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"id": f"b{i}", "prompt": p}) + "\n" for i, p in enumerate(b)))
    params = {
        "input_a": f"file://{tmp_path}/a.jsonl",
        "input_b": f"file://{tmp_path}/b.jsonl",
        "output_path": f"file://{tmp_path}/out.jsonl",
    }
    # a foreign file in the parts folder: compose must leave it (and so the folder) alone
    (tmp_path / "out.jsonl.parts").mkdir()
    (tmp_path / "out.jsonl.parts" / "notes.txt").write_text("not the batch's")

    def task(name: str) -> subprocess.Popen:
        args = ["tasks", "test", "agentchat_batch_two_writers", f"writer_{name}", "2026-05-03"]
        return airflow([*args, "-t", json.dumps(params)], fault_server)

    first = task("a")
    try:
        deadline = time.monotonic() + 120
        while len(fault_server.answered) < 40 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "writer_a ended before writer_b could start"
        second_log = finish(task("b"))
        assert first.poll() is None  # still mid-batch, holding the output
    finally:
        fault_server.release()
        first_log = finish(first)

    seen = fault_server.snapshot()["counts"]
    assert not any(prompt.startswith("writer b") for prompt in seen), second_log[-6000:]  # refused before sending
    assert "is being written by another live run" in second_log and "writer_a" in second_log, second_log[-4000:]
    assert f"{tmp_path}/out.jsonl" in second_log

    assert "Batch summary" in first_log, first_log[-4000:]
    out = lines_of(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in out) == sorted(f"i{i}" for i in range(n))  # no answer lost
    assert all(seen[p] == 1 for p in a)
    assert (tmp_path / "out.jsonl.parts" / "notes.txt").read_text() == "not the batch's"
    assert list((tmp_path / "out.jsonl.parts").iterdir()) == [tmp_path / "out.jsonl.parts" / "notes.txt"]
