"""AgentChatBatchOperator through ``execute`` in this process against the session dev server: outputs, input
forms, failures, resume after a crash. Every assertion is on what the dev server counted or recorded, or on the
output files, never on wall-clock time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from batches import CONN, lines_of, make_op
from fakes import FakeTI, Imported, import_in_fresh_python

from airflow_agentchat.batch.items import stable_id
from airflow_agentchat.batch.store import iter_records
from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url)


# ------------------------------------------------------------------------------------------------- outputs


def test_few_hundred_prompts_give_one_line_per_id(conn, server, tmp_path, canary_key):
    prompts = [f"question {i}" for i in range(300)]
    summary = make_op(tmp_path, prompts=prompts, max_concurrency=20).execute({"ti": FakeTI()})

    out = lines_of(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in out) == sorted(stable_id(p) for p in prompts)
    assert all(
        line["status"] == "ok" and line["text"] == line["response"]["choices"][0]["message"]["content"] for line in out
    )
    assert {line["text"] for line in out} == {f"Echo: {p}" for p in prompts}
    assert all(line["attempts"] == 1 and line["latency_ms"] >= 0 and line["request_id"] for line in out)
    stats = server.stats(timestamps=False)
    assert stats["total"] == 300 and all(stats["by_prompt"][p] == 1 for p in prompts)
    assert summary["total"] == summary["succeeded"] == summary["sent"] == 300 and summary["failed"] == 0
    assert summary["usage"]["total_tokens"] == sum(line["usage"]["total_tokens"] for line in out) > 0
    assert "response" not in json.dumps(summary) and len(json.dumps(summary)) < 2000  # a summary, not results
    assert not (tmp_path / "out.jsonl.parts").exists()  # parts were composed and removed
    assert canary_key not in (tmp_path / "out.jsonl").read_text()


def test_mixed_forms_overrides_context_and_invalid_items(conn, server, tmp_path):
    items = [
        "plain string",
        [{"role": "user", "content": "a message list"}],
        {"id": "dict-prompt", "prompt": "dict with prompt", "context": {"row": 7}},
        {"id": 42, "messages": [{"role": "user", "content": "first"}], "prompt": "then this"},
        {"id": "own-system", "prompt": "with my own system", "system_prompt": "Item system"},
        {"id": "short", "prompt": "one two three four five six", "max_tokens": 2},
        {"id": "via-params", "prompt": "params form", "params": {"n": 2}},
        {"id": "bad-temp", "prompt": "too hot", "temperature": 5},
        {"id": "typo", "prompt": "x", "temprature": 1},
        {"prompt": "no id, gets a stable one"},
        "plain string",  # duplicate: same content, same id, sent once
    ]
    summary = make_op(
        tmp_path, prompts=items, system_prompt="Operator system", temperature=0.3, max_failed_fraction=0.5
    ).execute({"ti": FakeTI()})

    out = {line["id"]: line for line in lines_of(tmp_path / "out.jsonl")}
    assert len(out) == 10 and summary["duplicates"] == 1 and summary["invalid"] == 2 and summary["sent"] == 8
    assert out[stable_id("plain string")]["text"] == "Echo: plain string"
    assert out[stable_id(items[1])]["text"] == "Echo: a message list"
    assert out["dict-prompt"]["context"] == {"row": 7}
    assert out["42"]["text"] == "Echo: then this"
    assert out["short"]["finish_reason"] == "length" and out["short"]["usage"]["completion_tokens"] == 2
    assert [c["message"]["content"] for c in out["via-params"]["response"]["choices"]] == [
        "Echo: params form",
        "Echo 1: params form",
    ]
    assert out["bad-temp"]["status"] == "error" and out["bad-temp"]["error"]["type"] == "invalid_request"
    assert out["bad-temp"]["error"]["errors"][0][0] == "temperature" and out["bad-temp"]["attempts"] == 0
    assert out["typo"]["error"]["type"] == "invalid_item" and "temprature" in out["typo"]["error"]["message"]
    assert out[stable_id(items[9])]["status"] == "ok"
    # invalid items were never sent; the system prompt of the operator and of an item both reach the server
    by_prompt = server.stats(timestamps=False)["by_prompt"]
    assert "too hot" not in by_prompt and "x" not in by_prompt and by_prompt["plain string"] == 1
    assert sum(by_prompt.values()) == 8


def test_item_overrides_reach_the_wire(conn, server, tmp_path):
    """The operator's system prompt and sampling fields apply unless the item says otherwise."""
    items = [{"id": "a", "prompt": "default"}, {"id": "b", "prompt": "own", "system_prompt": "", "max_tokens": 1}]
    make_op(tmp_path, prompts=items, system_prompt="Be brief", max_tokens=50).execute({"ti": FakeTI()})
    out = {line["id"]: line for line in lines_of(tmp_path / "out.jsonl")}
    # prompt tokens count every message: the system prompt adds to "a", "b" has none
    assert out["a"]["usage"]["prompt_tokens"] == 2 + 3 and out["b"]["usage"]["prompt_tokens"] == 2
    assert out["b"]["finish_reason"] == "length" and out["a"]["finish_reason"] == "stop"


def test_prompts_as_rendered_text_and_shared_field_errors(conn, tmp_path):
    op = make_op(tmp_path, prompts="['from', 'a python repr']")
    assert op.execute({"ti": FakeTI()})["succeeded"] == 2
    with pytest.raises(InvalidRequestError, match="temperature"):
        make_op(tmp_path, prompts=["x"], temperature=9).execute({"ti": FakeTI()})
    with pytest.raises(ValueError, match="exactly one"):
        make_op(tmp_path).execute({"ti": FakeTI()})


def test_max_failed_fraction_fails_after_writing_everything(conn, server, tmp_path):
    prompts = [f"fine {i}" for i in range(18)] + ["broken a [[fault:500]]", "broken b [[fault:500]]"]
    ok = make_op(tmp_path / "ok", prompts=prompts, max_retries=0, max_failed_fraction=0.1).execute({"ti": FakeTI()})
    assert ok["failed"] == 2 and ok["error_types"] == {"server_error": 2}

    ti = FakeTI()
    with pytest.raises(AgentChatError, match=r"2 of 20 items failed \(10.0%"):
        make_op(tmp_path / "bad", prompts=prompts, max_retries=0, max_failed_fraction=0.05).execute({"ti": ti})
    out = lines_of(tmp_path / "bad" / "out.jsonl")
    assert len(out) == 20
    failed = [line for line in out if line["status"] == "error"]
    assert {line["error"]["status"] for line in failed} == {500} and all(line["attempts"] == 1 for line in failed)
    assert ti.xcom["summary"]["failed"] == 2


def test_rerun_resends_only_failed_items(conn, server, tmp_path):
    """An Airflow retry after a failure: succeeded items are not paid for again, failed ones are retried."""
    prompts = [f"item {i}" for i in range(10)] + ["flaky [[fault:503:times=1]]"]
    with pytest.raises(AgentChatError):
        make_op(tmp_path, prompts=prompts, max_retries=0).execute({"ti": FakeTI()})
    summary = make_op(tmp_path, prompts=prompts, max_retries=0).execute({"ti": FakeTI()})
    assert summary["sent"] == 1 and summary["resumed"] == 10 and summary["failed"] == 0
    by_prompt = server.stats(timestamps=False)["by_prompt"]
    assert all(by_prompt[f"item {i}"] == 1 for i in range(10)) and by_prompt[prompts[-1]] == 2
    out = lines_of(tmp_path / "out.jsonl")
    assert len(out) == 11 and len({line["id"] for line in out}) == 11


def test_resume_ignores_a_torn_line_and_sends_only_missing(conn, server, tmp_path):
    prompts = [f"resume {i}" for i in range(30)]
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    done = [{"id": stable_id(p), "status": "ok", "text": "earlier", "usage": {"total_tokens": 1}} for p in prompts[:12]]
    torn = json.dumps({"id": stable_id(prompts[12]), "status": "ok"})[:-9]
    (parts / "part-20200101T000000000000-aaaaaa-000000.jsonl").write_text(
        "\n".join(json.dumps(d) for d in done) + "\n" + torn
    )
    summary = make_op(tmp_path, prompts=prompts).execute({"ti": FakeTI()})
    assert summary["resumed"] == 12 and summary["sent"] == 18 and summary["total"] == 30
    by_prompt = server.stats(timestamps=False)["by_prompt"]
    assert set(by_prompt) == set(prompts[12:]) and all(n == 1 for n in by_prompt.values())
    out = lines_of(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in out) == sorted(stable_id(p) for p in prompts)
    # a rerun after completion reads the composed output and sends nothing
    server.reset()
    again = make_op(tmp_path, prompts=prompts).execute({"ti": FakeTI()})
    assert again["sent"] == 0 and again["resumed"] == 30 and server.stats(timestamps=False)["total"] == 0


# --------------------------------------------------------------------------------------------- crash + resume

CRASH_SCRIPT = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})  # the tests' shared fakes
    from fakes import FakeTI, import_in_fresh_python, Imported
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    op = AgentChatBatchOperator(
        task_id="crash", agentchat_conn_id=sys.argv[1], input_path=sys.argv[2], output_path=sys.argv[3],
        max_concurrency=8, progress_interval=1,  # default durability settings
    )
    print("SUMMARY", op.execute({{"ti": FakeTI()}}), flush=True)
    """
)


def test_sigkill_mid_batch_then_rerun_requests_nothing_twice(conn, server, tmp_path, canary_key):
    n = 400
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps({"id": f"k{i}", "prompt": f"crash item {i}"}) + "\n" for i in range(n)))
    output = tmp_path / "out.jsonl"
    script = tmp_path / "run_batch.py"
    script.write_text(CRASH_SCRIPT)
    server.configure(latency_ms=25)  # 8 in flight: ~320 items/s, so the kill lands mid-batch
    args = [sys.executable, str(script), CONN, f"file://{source}", f"file://{output}"]

    proc = subprocess.Popen(args, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for p in tmp_path.glob("out.jsonl.parts/part-*") for _ in iter_records(p)) >= 60:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not output.exists(), "the batch finished before it was killed; the test proves nothing"

    from airflow.sdk import ObjectStoragePath

    written = {
        r["id"]
        for p in tmp_path.glob("out.jsonl.parts/part-*")
        for _, r in iter_records(ObjectStoragePath(f"file://{p}"))
    }
    before = server.stats(timestamps=False)["by_prompt"]
    assert 60 <= len(written) < n

    rerun = subprocess.run(args, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = server.stats(timestamps=False)["by_prompt"]

    for item_id in written:  # nothing already written was requested again
        prompt = f"crash item {item_id[1:]}"
        assert after[prompt] == before[prompt] == 1, item_id
    assert set(after) == {f"crash item {i}" for i in range(n)}  # everything missing was sent
    # only the answers in flight when the process died (one per worker at most) were paid for twice
    assert sum(1 for count in after.values() if count > 1) <= 8
    out = lines_of(output)
    ids = [line["id"] for line in out]
    assert len(ids) == n and set(ids) == {f"k{i}" for i in range(n)}  # every id exactly once
    assert all(line["status"] == "ok" for line in out)
    assert not (tmp_path / "out.jsonl.parts").exists()
    log = rerun.stdout + rerun.stderr
    assert "Resuming" in log and "Batch finished" in log
    assert canary_key not in log and canary_key not in output.read_text()


def test_importing_the_operator_stays_light():
    imported = import_in_fresh_python("import airflow_agentchat.operators.batch")
    assert Imported.matching(imported.loaded, ("airflow_agentchat.models", "aiolimiter", "httpx_aiohttp")) == []
