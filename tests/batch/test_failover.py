"""A batch with fallback_conn_ids fails over per item, with a breaker per connection.

Primaries are a closed port, or scripted servers of the tests' own that answer 500, 429 or 400 (or answer
some prompts and fail others); the session dev server is the fallback. Every assertion is on what the servers
received or on the output lines and the summary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Recorded, ScriptedServer

from airflow_agentchat.batch.store import ResultStore, iter_records

PRIMARY, FALLBACK = "bf_primary", "bf_fallback"


class _TI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.pushed[key] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error(status: int, message: str = "boom", code: str | None = None, **headers: str) -> tuple[int, dict, bytes]:
    body = {"error": {"message": message, "type": "error", "code": code}}
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


def _prompt(recorded: Recorded) -> str:
    return json.loads(recorded.body)["messages"][-1]["content"]


def _answer(recorded: Recorded) -> tuple[int, dict, bytes]:
    """What a healthy scripted agent says: ``Primary: <prompt>``, 5 + 5 tokens."""
    body = {
        "id": "p1",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"Primary: {_prompt(recorded)}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


@pytest.fixture()
def primary():
    server = ScriptedServer().start()
    yield server
    server.stop()


@pytest.fixture()
def dev(devserver):
    devserver.reset()
    devserver.configure(latency_ms=0)
    yield devserver
    devserver.reset()
    devserver.configure(latency_ms=0)


def _op(tmp_path: Path, **kwargs: Any):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    kwargs.setdefault("agentchat_conn_id", PRIMARY)
    kwargs.setdefault("fallback_conn_ids", [FALLBACK])
    kwargs.setdefault("progress_interval", 0.5)
    kwargs.setdefault("max_failed_fraction", 1.0)
    return AgentChatBatchOperator(task_id="batch", **kwargs)


def _lines(tmp_path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return {line["id"]: line for line in lines}


def _prompts(n: int, tag: str) -> list[dict]:
    return [{"id": f"i{i}", "prompt": f"{tag} {i}"} for i in range(n)]


# ------------------------------------------------------------------------------- the primary cannot answer


def test_a_refused_primary_fails_every_item_over_and_lines_name_the_fallback(dev, make_conn, tmp_path):
    make_conn(PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0, prompt_token_price=1000000)
    make_conn(FALLBACK, dev.url, prompt_token_price=1000, completion_token_price=2000)
    op = _op(tmp_path, prompts=_prompts(12, "refused"), max_concurrency=3, breaker_failures=100)
    summary = op.execute({"ti": _TI()})
    lines = _lines(tmp_path)
    assert len(lines) == 12 and all(line["status"] == "ok" for line in lines.values())
    assert {line["conn_id"] for line in lines.values()} == {FALLBACK}
    assert lines["i3"]["text"] == "Echo: refused 3" and lines["i3"]["attempts"] == 2  # refused once, answered once
    for line in lines.values():  # priced by the connection that answered, not by the primary
        usage = line["usage"]
        assert line["cost"] == pytest.approx((usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6)
    assert summary["connections"] == {FALLBACK: {"answers": 12, "errors": 0, "cost": summary["cost"]}}
    assert summary["cost"] == pytest.approx(sum(line["cost"] for line in lines.values()), abs=1e-6)
    assert summary["failovers"] == 12 and summary["succeeded"] == 12
    assert dev.stats(timestamps=False)["total"] == 12
    facts = op._facts
    assert facts["conn_id"] == FALLBACK and facts["answers_by_conn"] == {FALLBACK: 12}


def test_a_500_primary_is_retried_then_failed_over_and_its_breaker_stops_sending(primary, dev, make_conn, tmp_path):
    """breaker_failures=3: three items fail on the primary (each after its retry), then it is open for the rest
    of the batch (a cool-down longer than the test) and every other item goes straight to the fallback."""
    primary.script()
    primary.default = _error(500, "down")
    make_conn(PRIMARY, primary.url, max_retries=1)
    make_conn(FALLBACK, dev.url)
    op = _op(tmp_path, prompts=_prompts(20, "five hundred"), max_concurrency=1, breaker_failures=3)
    summary = op.execute({"ti": _TI()})
    assert len(primary.requests) == 3 * 2  # three items, each sent twice (max_retries=1), nothing after
    lines = _lines(tmp_path)
    assert all(line["status"] == "ok" and line["conn_id"] == FALLBACK for line in lines.values())
    assert [lines[f"i{i}"]["attempts"] for i in range(5)] == [3, 3, 3, 1, 1]
    assert summary["failovers"] == 3 and summary["connections"] == {FALLBACK: {"answers": 20, "errors": 0}}
    breaker = op._lanes[0].breaker
    assert breaker.state == "open" and breaker.opened == 1


def test_with_concurrency_the_primary_gets_at_most_n_plus_the_requests_in_flight(primary, dev, make_conn, tmp_path):
    primary.script()
    primary.default = _error(503, "down")
    make_conn(PRIMARY, primary.url, max_retries=0)
    make_conn(FALLBACK, dev.url)
    op = _op(tmp_path, prompts=_prompts(60, "concurrent"), max_concurrency=4, breaker_failures=5)
    summary = op.execute({"ti": _TI()})
    assert 5 <= len(primary.requests) <= 5 + 4 - 1
    assert summary["succeeded"] == 60 and summary["connections"][FALLBACK]["answers"] == 60


def test_after_the_cooldown_one_probe_closes_the_breaker_and_the_primary_answers_again(
    primary, dev, make_conn, tmp_path
):
    """The primary fails its first 3 requests, then recovers; cool-down 0: the next item probes it at once."""
    served = []

    def responder(recorded: Recorded):
        served.append(_prompt(recorded))
        return _error(500, "down") if len(served) <= 3 else _answer(recorded)

    primary.script()
    primary.responder = responder
    make_conn(PRIMARY, primary.url, max_retries=0)
    make_conn(FALLBACK, dev.url)
    op = _op(tmp_path, prompts=_prompts(10, "probe"), max_concurrency=1, breaker_failures=3, breaker_cooldown=0)
    summary = op.execute({"ti": _TI()})
    lines = _lines(tmp_path)
    by_conn = {i: lines[f"i{i}"]["conn_id"] for i in range(10)}
    assert by_conn == {i: FALLBACK if i < 3 else PRIMARY for i in range(10)}
    assert lines["i3"]["text"] == "Primary: probe 3"
    assert len(primary.requests) == 10 and dev.stats(timestamps=False)["total"] == 3
    assert summary["connections"] == {PRIMARY: {"answers": 7, "errors": 0}, FALLBACK: {"answers": 3, "errors": 0}}
    assert op._lanes[0].breaker.state == "closed"


def test_a_rate_limited_primary_fails_over_after_its_retries(primary, dev, make_conn, tmp_path):
    primary.script()
    primary.default = _error(429, "slow down", "rate_limit_exceeded", **{"retry-after-ms": "5"})
    make_conn(PRIMARY, primary.url, max_retries=2)
    make_conn(FALLBACK, dev.url)
    summary = _op(tmp_path, prompts=_prompts(4, "limited"), max_concurrency=1, breaker_failures=10).execute(
        {"ti": _TI()}
    )
    assert len(primary.requests) == 4 * 3
    lines = _lines(tmp_path)
    assert all(line["conn_id"] == FALLBACK and line["status"] == "ok" for line in lines.values())
    assert summary["connections"] == {FALLBACK: {"answers": 4, "errors": 0}}


def test_an_invalid_request_does_not_fail_over_and_does_not_open_the_breaker(primary, dev, make_conn, tmp_path):
    primary.script()
    primary.default = _error(400, "messages[0].content: bad", "invalid_request", **{"x-request-id": "req-400"})
    make_conn(PRIMARY, primary.url, max_retries=2)
    make_conn(FALLBACK, dev.url)
    op = _op(tmp_path, prompts=_prompts(8, "refused request"), max_concurrency=2, breaker_failures=2)
    summary = op.execute({"ti": _TI()})
    assert len(primary.requests) == 8 and dev.stats(timestamps=False)["total"] == 0  # every item asked once
    lines = _lines(tmp_path)
    for line in lines.values():
        assert line["status"] == "error" and line["conn_id"] == PRIMARY
        assert line["error"]["status"] == 400 and line["error"]["request_id"] == "req-400"
    assert summary["failovers"] == 0 and summary["connections"] == {PRIMARY: {"answers": 0, "errors": 8}}
    assert op._lanes[0].breaker.state == "closed"


def test_when_every_connection_fails_the_item_is_an_error_line_of_the_last_one(make_conn, tmp_path):
    make_conn(PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn(FALLBACK, f"http://127.0.0.1:{_free_port()}", max_retries=0)
    op = _op(tmp_path, prompts=_prompts(6, "nobody"), max_concurrency=1, breaker_failures=2)
    summary = op.execute({"ti": _TI()})
    lines = _lines(tmp_path)
    assert len(lines) == 6 and all(line["status"] == "error" for line in lines.values())
    assert {line["error"]["type"] for line in lines.values()} == {"connection_refused"}
    assert [lines[f"i{i}"]["conn_id"] for i in range(6)] == [FALLBACK] * 6
    # both breakers open after two items: the rest are not sent at all, and say so
    assert [lines[f"i{i}"]["attempts"] for i in range(6)] == [2, 2, 0, 0, 0, 0]
    assert lines["i5"]["error"]["breaker"] == "open" and "breaker" not in lines["i0"]["error"]
    assert summary["failed"] == 6 and summary["connections"] == {FALLBACK: {"answers": 0, "errors": 6}}


def test_an_answer_a_fallback_gave_is_cached_for_that_connection(dev, make_conn, tmp_path):
    """Run 1: the primary is down, the fallback answers and its cache keeps the answers. Run 2 (a new output,
    the primary still down): the primary's cache has nothing, the fallback's cache answers before anything is
    sent to the fallback; the lines name the fallback as the connection whose cache held them."""
    make_conn(PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn(FALLBACK, dev.url)
    cache = f"file://{tmp_path}/cache"
    prompts = _prompts(4, "cached")
    first = _op(tmp_path, prompts=prompts, cache_path=cache, temperature=0, max_concurrency=1).execute({"ti": _TI()})
    assert first["connections"] == {FALLBACK: {"answers": 4, "errors": 0}} and first["cached"] == 0
    sent = dev.stats(timestamps=False)["total"]
    second = _op(
        tmp_path, prompts=prompts, cache_path=cache, temperature=0, output_path=f"file://{tmp_path}/again.jsonl"
    ).execute({"ti": _TI()})
    assert second["cached"] == 4 and dev.stats(timestamps=False)["total"] == sent
    lines = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert all(line["cached"] and line["conn_id"] == FALLBACK for line in lines)


def test_the_lineage_facet_names_the_connections_that_answered(primary, dev, make_conn, tmp_path):
    def responder(recorded: Recorded):
        return _error(502, "gateway") if _prompt(recorded).endswith(("1", "2")) else _answer(recorded)

    primary.script()
    primary.responder = responder
    make_conn(PRIMARY, primary.url, max_retries=0)
    make_conn(FALLBACK, dev.url)
    op = _op(tmp_path, prompts=_prompts(5, "lineage"), max_concurrency=1, breaker_failures=10)
    op.execute({"ti": _TI()})
    facet = op.get_openlineage_facets_on_complete(None).run_facets["agentChat"]
    assert facet.connId == PRIMARY and facet.answersByConn == {PRIMARY: 3, FALLBACK: 2}
    assert facet.errors == 0 and facet.requests == 7  # the two failed requests on the primary count


def test_no_connection_s_key_reaches_the_lines(primary, make_conn, tmp_path, canary_key):
    """The fallback has a key of its own and echoes it in its error message: no line carries it."""
    fallback_key = "sk-fallback-4d1e-DO-NOT-LEAK"

    def responder(recorded: Recorded):
        return _error(500, f"bad gateway for {recorded.headers.get('authorization')}")

    primary.script()
    primary.responder = responder
    make_conn(PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn(FALLBACK, primary.url, password=fallback_key, max_retries=0)
    _op(tmp_path, prompts=_prompts(3, "secret"), max_concurrency=1).execute({"ti": _TI()})
    assert fallback_key in primary.requests[0].headers["authorization"]  # the server did get it
    text = (tmp_path / "out.jsonl").read_text()
    assert fallback_key not in text and canary_key not in text
    assert all(line["conn_id"] == FALLBACK and line["error"]["status"] == 500 for line in _lines(tmp_path).values())


# ------------------------------------------------------------------------------------------- limits, budget


def _busiest(stamps: list[float], window: float) -> int:
    return max(sum(1 for t in stamps if s <= t < s + window) for s in stamps)


def test_each_connection_keeps_its_own_request_limit(primary, dev, make_conn, tmp_path):
    """Odd items fail on the primary and go to the fallback: each server sees its own connection's limit."""

    def responder(recorded: Recorded):
        number = int(_prompt(recorded).split()[-1])
        return _error(500, "down") if number % 2 else _answer(recorded)

    primary.script()
    primary.responder = responder
    make_conn(PRIMARY, primary.url, max_retries=0, requests_per_minute=1200)  # 20 a second
    make_conn(FALLBACK, dev.url, requests_per_minute=600)  # 10 a second
    summary = _op(tmp_path, prompts=_prompts(40, "paced"), max_concurrency=8, breaker_failures=1000).execute(
        {"ti": _TI()}
    )
    assert summary["connections"] == {PRIMARY: {"answers": 20, "errors": 0}, FALLBACK: {"answers": 20, "errors": 0}}
    primary_stamps = sorted(r.at for r in primary.requests)
    fallback_stamps = sorted(dev.stats()["timestamps"])
    assert len(primary_stamps) == 40 and len(fallback_stamps) == 20
    for window in (0.5, 1.0):  # no window holds more than that connection's limit (+1 for network jitter)
        assert _busiest(primary_stamps, window) <= 20 * window + 1, window
        assert _busiest(fallback_stamps, window) <= 10 * window + 1, window


def test_max_cost_needs_prices_on_every_connection_before_anything_is_sent(primary, make_conn, tmp_path):
    from airflow_agentchat.exceptions import AgentChatError

    primary.script()
    make_conn(PRIMARY, primary.url, prompt_token_price=1)
    make_conn(FALLBACK, primary.url)
    with pytest.raises(AgentChatError, match=f"fallback connection '{FALLBACK}'"):
        _op(tmp_path, prompts=["x"], max_cost=1.0).execute({"ti": _TI()})
    assert primary.requests == []


def test_a_cost_budget_counts_each_answer_at_the_prices_of_its_connection(dev, make_conn, tmp_path):
    """Each request reserves at the prices of the connection it goes to: the dead primary's reservation (about
    71 tokens at 100 per million, 0.0071) fits the budget, and is released when it fails. Priced at the primary's
    prices, one answer (about 13 tokens, 0.0013) would leave no room for the next reservation; at the fallback's
    (1 per million) all five fit."""
    make_conn(
        PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0, prompt_token_price=100, completion_token_price=100
    )
    make_conn(FALLBACK, dev.url, prompt_token_price=1, completion_token_price=1)
    op = _op(tmp_path, prompts=_prompts(5, "budget"), max_concurrency=1, max_cost=0.0075, breaker_failures=100)
    summary = op.execute({"ti": _TI()})
    assert summary["succeeded"] == 5 and not summary["budget_exhausted"]
    assert summary["cost"] == pytest.approx(summary["usage"]["total_tokens"] / 1e6)


def test_a_missing_fallback_connection_fails_the_task_before_anything_is_sent(primary, make_conn, tmp_path):
    primary.script()
    primary.responder = _answer
    make_conn(PRIMARY, primary.url)
    with pytest.raises(Exception, match="bf_nowhere"):
        _op(tmp_path, prompts=["x"], fallback_conn_ids=["bf_nowhere"]).execute({"ti": _TI()})
    assert primary.requests == []


def test_arguments_are_checked_when_the_dag_is_parsed():
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with pytest.raises(ValueError, match="breaker_failures"):
        AgentChatBatchOperator(task_id="b", prompts=["x"], output_path="o.jsonl", breaker_failures=0)
    with pytest.raises(ValueError, match="breaker_cooldown"):
        AgentChatBatchOperator(task_id="b", prompts=["x"], output_path="o.jsonl", breaker_cooldown=-1)
    with pytest.raises(ValueError, match="fallback_conn_ids"):
        AgentChatBatchOperator(task_id="b", prompts=["x"], output_path="o.jsonl", fallback_conn_ids=[3])
    assert "fallback_conn_ids" in AgentChatBatchOperator.template_fields


# ------------------------------------------------------------------------------------------ kill + resume

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    class TI:
        def xcom_push(self, key, value):
            pass

    op = AgentChatBatchOperator(
        task_id="crash", agentchat_conn_id=sys.argv[1], fallback_conn_ids=[sys.argv[2]], input_path=sys.argv[3],
        output_path=sys.argv[4], max_concurrency=8, progress_interval=1, breaker_failures=3,
    )
    print("SUMMARY", op.execute({"ti": TI()}), flush=True)
    """
)


def test_an_item_answered_by_the_fallback_is_done_on_resume_even_when_the_primary_is_back(
    primary, dev, make_conn, tmp_path
):
    """Killed mid-batch while the primary was down; on the rerun the primary answers: nothing written before the
    kill is sent again, to either connection."""
    n = 300
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps({"id": f"k{i}", "prompt": f"resume item {i}"}) + "\n" for i in range(n)))
    output = tmp_path / "out.jsonl"
    script = tmp_path / "run_batch.py"
    script.write_text(CRASH_SCRIPT)
    make_conn(PRIMARY, f"http://127.0.0.1:{_free_port()}", max_retries=0)
    make_conn(FALLBACK, dev.url)
    dev.configure(latency_ms=25)  # 8 in flight: the kill lands mid-batch
    args = [sys.executable, str(script), PRIMARY, FALLBACK, f"file://{source}", f"file://{output}"]
    proc = subprocess.Popen(args, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for p in tmp_path.glob("out.jsonl.parts/part-*") for _ in iter_records(p)) >= 40:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
        proc.stdout.close()
    assert not output.exists(), "the batch finished before it was killed; the test proves nothing"
    written = ResultStore(f"file://{output}").scan().done
    assert 40 <= len(written) < n
    before = dev.stats(timestamps=False)["by_prompt"]

    primary.script()
    primary.responder = _answer
    make_conn(PRIMARY, primary.url, max_retries=0)  # the primary is back for the rerun
    dev.configure(latency_ms=0)
    rerun = subprocess.run(args, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    asked_primary = {_prompt(r) for r in primary.requests}
    after = dev.stats(timestamps=False)["by_prompt"]
    for item_id in written:
        prompt = f"resume item {item_id[1:]}"
        assert prompt not in asked_primary, item_id  # not sent to the primary ...
        assert after[prompt] == before[prompt] == 1, item_id  # ... nor to the fallback again
    lines = {json.loads(line)["id"]: json.loads(line) for line in output.read_text().splitlines()}
    assert len(lines) == n and all(line["status"] == "ok" for line in lines.values())
    assert {lines[i]["conn_id"] for i in written} == {FALLBACK}
    assert all(lines[f"k{i}"]["conn_id"] == PRIMARY for i in range(n) if f"k{i}" not in written)
    assert len(asked_primary) == n - len(written)


# ---------------------------------------------------------------------------------------- under Airflow

DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with DAG(dag_id="agentchat_batch_failover_case", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None):
        AgentChatBatchOperator(
            task_id="batch",
            prompts=[f"dag item {i}" for i in range(6)],
            output_path="{{ params.output_path }}",
            agentchat_conn_id="bf_dag_primary",
            fallback_conn_ids="{{ params.fallbacks }}",
            max_concurrency=2,
            breaker_failures=2,
            params={"output_path": "", "fallbacks": ""},
        )
    """
)


class _Statsd:
    """A StatsD server on a free UDP port: the ``name:value|c`` counters it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.lines.extend(self.sock.recv(65535).decode("utf-8", "replace").splitlines())
            except TimeoutError:
                continue

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        counters: dict[str, int] = {}
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("c"):
                counters[name] = counters.get(name, 0) + int(float(value))
        return counters


def test_airflow_dags_test_runs_a_batch_that_fails_over(run_dag, dev, tmp_path, canary_key):
    """Under Airflow: templated fallbacks from params, lines and summary name the fallback, and the metrics of
    each request carry the connection it went to."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "batch_failover_case.py").write_text(DAG_FILE)
    down = {"conn_type": "agentchat", "host": f"http://127.0.0.1:{_free_port()}", "password": canary_key}
    up = {"conn_type": "agentchat", "host": dev.url, "password": canary_key}
    statsd = _Statsd()
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_BF_DAG_PRIMARY": json.dumps({**down, "extra": {"max_retries": 0}}),
        "AIRFLOW_CONN_BF_DAG_FALLBACK": json.dumps(up),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    output = tmp_path / "out.jsonl"
    conf = {"output_path": f"file://{output}", "fallbacks": '["bf_dag_fallback"]'}
    try:
        xcoms = run_dag("agentchat_batch_failover_case", conf=conf, env=env)
    finally:
        counters = statsd.close()
    summary = xcoms[("batch", -1, "return_value")]
    assert summary["succeeded"] == 6 and summary["connections"] == {"bf_dag_fallback": {"answers": 6, "errors": 0}}
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert {line["conn_id"] for line in lines} == {"bf_dag_fallback"} and len(lines) == 6
    assert canary_key not in xcoms["_log"] and canary_key not in output.read_text()
    names = ".agentchat_batch_failover_case.batch"
    refused = counters.get(f"airflow.agentchat.requests.bf_dag_primary{names}.connection_refused", 0)
    assert 2 <= refused <= 3  # breaker_failures=2, and one more may have been in flight (max_concurrency=2)
    assert refused == summary["failovers"]
    assert counters[f"airflow.agentchat.requests.bf_dag_fallback{names}.ok"] == 6
    assert f"airflow.agentchat.requests.bf_dag_primary{names}.ok" not in counters
