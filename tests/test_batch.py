"""AgentChatBatchOperator against the session dev server: outputs, input forms, failures, resume, limits.

Operator behaviour is checked through ``execute`` in this process (fast) and, where Airflow itself matters
(templated prompts from XCom, mapping, the example DAG), with ``airflow dags test``. Every assertion is on
what the dev server counted or recorded, or on the output files, never on wall-clock time.
"""

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
from fakes import FakeTI, Imported, import_in_fresh_python

from airflow_agentchat.batch.items import stable_id
from airflow_agentchat.batch.store import iter_records
from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError

ROOT = Path(__file__).resolve().parent.parent
CONN = "agentchat_batch"


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url)


def make_op(tmp_path: Path, **kwargs):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    kwargs.setdefault("agentchat_conn_id", CONN)
    kwargs.setdefault("progress_interval", 0.5)
    return AgentChatBatchOperator(task_id="batch", **kwargs)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})  # the tests' shared fakes
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


# ------------------------------------------------------------------------------------------------ limits


def test_requests_per_minute_paces_every_window(conn, server, tmp_path):
    rpm = 1200  # 20 a second, so the limit binds within a short test
    make_op(tmp_path, prompts=[f"paced {i}" for i in range(50)], max_concurrency=10, requests_per_minute=rpm).execute(
        {"ti": FakeTI()}
    )
    stamps = sorted(server.stats()["timestamps"])
    assert len(stamps) == 50
    # no minute above the limit (trivially, here) ...
    assert max(sum(1 for t in stamps if s <= t < s + 60) for s in stamps) <= rpm
    # ... because no window of any length w holds more than rpm/60*w requests (+1 for network jitter)
    for window in (0.25, 0.5, 1.0):
        busiest = max(sum(1 for t in stamps if s <= t < s + window) for s in stamps)
        assert busiest <= rpm / 60 * window + 1, (window, busiest)


def test_429_with_retry_after_pauses_the_whole_batch(conn, server, tmp_path):
    server.add_faults([{"kind": "429", "retry_after": 1, "times": 1}])
    summary = make_op(tmp_path, prompts=[f"limited {i}" for i in range(40)], max_concurrency=4).execute(
        {"ti": FakeTI()}
    )
    stats = server.stats()
    assert stats["by_status"] == {"429": 1, "200": 40} and summary["failed"] == 0
    stamps = sorted(stats["timestamps"])
    first = stamps[0]  # the first arrival got the 429 (faults are handed out in arrival order)
    # Requests already on the wire when the 429 came back may land just after it; nothing new may be sent
    # until its retry-after second has passed.
    early = [round(t - first, 3) for t in stamps if first + 0.25 <= t < first + 1.0]
    assert early == []
    retried = [line for line in lines_of(tmp_path / "out.jsonl") if line["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["latency_ms"] >= 1000


def test_every_request_sent_takes_one_rate_slot_and_a_pause_takes_none(conn, server, tmp_path):
    """Waiting out a 429's shared pause, or a back-off, must not spend request slots (they would be lost)."""
    server.add_faults([{"kind": "429", "retry_after": 0.5, "times": 1}])
    op = make_op(tmp_path, prompts=[f"slot {i}" for i in range(20)], max_concurrency=4, requests_per_minute=6000)
    slots = []
    pacer = op.gate._pacer
    take = pacer.book

    def counted() -> float:
        slots.append(1)
        return take()

    pacer.book = counted
    summary = op.execute({"ti": FakeTI()})
    assert summary["succeeded"] == 20 and summary["attempts"] == 21
    assert len(slots) == server.stats()["total"] == 21


def test_tokens_per_minute_budget_is_respected(conn, server, tmp_path):
    # 12 tokens per item (6 prompt + 6 completion); 1,800 a minute is 30 a second with a 300-token bucket,
    # so 30 items (360 tokens, reserved as 13 each) cannot all arrive before the budget has refilled.
    tpm = 1800
    summary = make_op(
        tmp_path,
        prompts=[f"tok {i} a b c" for i in range(30)],
        max_concurrency=8,
        tokens_per_minute=tpm,
        max_tokens=6,
    ).execute({"ti": FakeTI()})
    stamps = sorted(server.stats()["timestamps"])
    per_item = summary["usage"]["total_tokens"] / 30
    assert stamps[-1] - stamps[0] > 1.0  # the budget did bind (server-side arrival times)
    assert per_item == 12
    # tokens that arrived in any window never exceed the bucket plus what refilled during the window
    for i, start in enumerate(stamps):
        for j in range(i, len(stamps)):
            assert (j - i + 1) * per_item <= tpm / 6 + tpm / 60 * (stamps[j] - start) + per_item, (i, j)


def test_kill_while_settling_the_token_budget_keeps_every_paid_answer(conn, server, tmp_path):
    """Answers far above their token estimate make workers wait to settle; a kill then must not lose them."""
    import threading

    from airflow_agentchat.batch.store import ResultStore

    words = " ".join(f"w{i}" for i in range(150))  # ~150 prompt + ~150 completion tokens per item
    op = make_op(tmp_path, prompts=[f"{i} {words}" for i in range(4)], max_concurrency=4, tokens_per_minute=600)
    killer = threading.Timer(2.0, op.on_kill)
    killer.start()
    with pytest.raises(BaseException):  # noqa: B017 - cancelled: CancelledError or an AgentChatError
        op.execute({"ti": FakeTI()})
    killer.join()
    answered = server.stats()["by_status"].get("200", 0)
    assert answered >= 1
    assert len(ResultStore(f"file://{tmp_path}/out.jsonl").scan().done) == answered


# ------------------------------------------------------------------------------------------------ shards


def test_split_jsonl_is_deterministic_and_complete(tmp_path):
    from airflow_agentchat.batch import split_jsonl

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "s{i}", "prompt": "p{i}"}}\n' for i in range(10)) + "\n\n")
    uris = split_jsonl(f"file://{source}", num_shards=3)
    assert [u.rsplit("/", 1)[1] for u in uris] == [f"in-{i:05d}-of-00003.jsonl" for i in range(3)]
    contents = [Path(u.removeprefix("file://")).read_text().splitlines() for u in uris]
    assert [len(c) for c in contents] == [4, 4, 2]
    assert [json.loads(line)["id"] for c in contents for line in c] == [f"s{i}" for i in range(10)]
    assert split_jsonl(f"file://{source}", num_shards=3) == uris
    assert len(split_jsonl(str(source), tmp_path / "by_size", shard_size=5)) == 2


# ------------------------------------------------------------------------------------------------ Airflow

CASES_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with DAG(dag_id="agentchat_batch_cases", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None):

        @task
        def rows() -> list:
            return [{"id": f"row-{i}", "prompt": f"xcom row {i}", "context": {"i": i}} for i in range(5)] + [
                "a bare string",
                [{"role": "user", "content": "a message list"}],
            ]

        made = rows()
        AgentChatBatchOperator(
            task_id="from_xcom_arg", prompts=made, output_path="file://{{ params.out }}/xcomarg-{{ ds_nodash }}.jsonl",
            agentchat_conn_id="agentchat_default",
        )
        AgentChatBatchOperator(
            task_id="from_jinja", prompts="{{ ti.xcom_pull(task_ids='rows') }}",
            output_path="file://{{ params.out }}/jinja-{{ ds_nodash }}.jsonl", max_tokens=64,
        ).set_upstream(made)

        @task
        def inputs() -> list:
            import json, os
            paths = []
            for shard in range(2):
                path = os.path.join("{out}", f"mapped-{shard}.jsonl")
                with open(path, "w") as handle:
                    for i in range(3):
                        handle.write(json.dumps({"id": f"m{shard}-{i}", "prompt": f"mapped {shard} {i}"}) + "\\n")
                paths.append("file://" + path)
            return paths

        AgentChatBatchOperator.partial(task_id="mapped").expand(input_path=inputs())
    """
)


@pytest.fixture(scope="module")
def cases_run(run_dag, tmp_path_factory):
    from conftest import DAGS_FOLDER

    out = tmp_path_factory.mktemp("batch-cases")
    (DAGS_FOLDER / "agentchat_batch_cases.py").write_text(
        CASES_DAG.replace('"{out}"', repr(str(out))).replace("{{ params.out }}", str(out))
    )
    return run_dag("agentchat_batch_cases", "2026-02-03"), out


def test_templated_prompts_from_xcom_under_airflow(cases_run, canary_key):
    x, out = cases_run
    for task_id, name in (("from_xcom_arg", "xcomarg"), ("from_jinja", "jinja")):
        summary = x[(task_id, -1, "return_value")]
        assert summary["total"] == summary["succeeded"] == 7, summary
        lines = lines_of(out / f"{name}-20260203.jsonl")
        by_id = {line["id"]: line for line in lines}
        assert (
            len(lines) == 7 and by_id["row-3"]["text"] == "Echo: xcom row 3" and by_id["row-3"]["context"] == {"i": 3}
        )
        assert by_id[stable_id("a bare string")]["text"] == "Echo: a bare string"
    assert canary_key not in x["_log"]


def test_mapped_tasks_each_write_their_own_output(cases_run):
    x, out = cases_run
    for shard in range(2):
        summary = x[("mapped", shard, "return_value")]
        assert summary["output_path"] == f"file://{out}/mapped-{shard}.results.jsonl"
        assert summary["succeeded"] == 3
        assert {line["id"] for line in lines_of(out / f"mapped-{shard}.results.jsonl")} == {
            f"m{shard}-{i}" for i in range(3)
        }


def test_example_dag_runs_sharded_and_summarises(run_dag, canary_key):
    x = run_dag("example_agentchat_batch")
    shards = x[("make_shards", -1, "return_value")]
    assert len(shards) == 3
    summaries = [x[("ask_agent", i, "return_value")] for i in range(3)]
    assert sum(s["total"] for s in summaries) == 240 and all(s["failed"] == 0 for s in summaries)
    result = x[("summarise", -1, "return_value")]
    assert result["shards"] == 3 and result["succeeded"] == result["lines"] == 240
    assert sum(result["answered_by_topic"].values()) == 240
    assert canary_key not in x["_log"]


def test_importing_the_operator_stays_light():
    imported = import_in_fresh_python("import airflow_agentchat.operators.batch")
    assert Imported.matching(imported.loaded, ("airflow_agentchat.models", "aiolimiter", "httpx_aiohttp")) == []
    # the time itself is measured by benchmarks/import_cost.py (make bench), not here


def test_error_lines_carry_the_kind_of_the_error_class(make_conn, tmp_path):
    """The type on an error line is the error's own kind, so a refused connection says so."""
    import socket

    from airflow_agentchat.batch.items import InvalidItemError
    from airflow_agentchat.exceptions import RefusedError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    op = make_op(
        tmp_path,
        prompts=["x", {"id": "typo", "prompt": "y", "temprature": 1}],
        agentchat_conn_id=make_conn("batch_closed", closed),
        max_retries=0,
        max_failed_fraction=1.0,
    )
    summary = op.execute({"ti": FakeTI()})
    assert summary["error_types"] == {RefusedError.kind: 1, InvalidItemError.kind: 1}
    kinds = {line["id"]: line["error"]["type"] for line in lines_of(tmp_path / "out.jsonl")}
    assert kinds["typo"] == "invalid_item" and sorted(kinds.values()) == ["connection_refused", "invalid_item"]


def test_result_lines_ok_and_error_have_one_shape():
    from airflow_agentchat.batch.results import result_line

    answer = {"text": "hi", "finish_reason": "stop"}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    ok = json.loads(result_line("a", None, answer=answer, usage=usage, attempts=1, latency_ms=2.0, request_id="r"))
    failed = json.loads(result_line("b", {"type": "timeout", "message": "m"}, attempts=2, latency_ms=3.0, context=7))
    core = {"id", "status", "usage", "attempts", "latency_ms"}
    assert core <= set(ok) and core <= set(failed)
    assert (ok["status"], ok["text"], ok["request_id"], "error" in ok) == ("ok", "hi", "r", False)
    assert (failed["status"], failed["error"]["type"], failed["context"]) == ("error", "timeout", 7)
    assert failed["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_the_response_on_a_line_is_the_whole_response():
    from airflow_agentchat.batch.results import result_line
    from airflow_agentchat.models import ChatCompletion

    raw = {
        "id": "c1",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "h\u00e9 \u2028"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "retrieval": {"retrieved_data": [{"doc": 1}]},
        "vendor_extra": {"kept": True},
    }
    completion = ChatCompletion.model_validate(raw)
    line = result_line(
        "a", None, answer={"text": completion.text}, attempts=1, latency_ms=1.0, response=completion.to_json()
    )
    assert line.count(b"\n") == 0
    record = json.loads(line)
    assert record["response"] == completion.to_dict()
    assert record["response"]["vendor_extra"] == {"kept": True} and record["text"] == "h\u00e9 \u2028"
