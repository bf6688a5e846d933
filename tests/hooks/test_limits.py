"""One request limit per agent, held by the connection and shared through Redis (hooks/limits.py).

Each test runs senders in threads, each with its own hook (and, for the async path, its own event loop), the
way separate tasks and workers send: they share nothing but the connection's limit in a real
``redis-server``. The dev agent records when each request arrived; the limit is judged there.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fakes import FakeTI
from suite import CANARY_KEY

pytestmark = [
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server (.ci/run installs it)"),
    pytest.mark.serial,  # judges how much of a limit senders use, by arrival times
]

CONN = "limited_agent"
BACKEND = "limits_redis"
RPM = 1200  # the shared window is 19 requests a second (see moving_window): a few seconds say enough
#: The limit in one window of the limiter's own length. The limiter grants a little less (see moving_window):
#: it counts grants, and the milliseconds from grant to arrival vary, so a grant may land past a window edge.
LIMIT = RPM * 2 // 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A throw-away ``redis-server`` on a free port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture()
def redis_server() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.kill()


@pytest.fixture()
def server(server):
    """The shared clean dev server, answering after 20 ms."""
    server.configure(latency_ms=20)
    return server


@pytest.fixture()
def shared_conn(server, redis_server, make_conn, monkeypatch) -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{BACKEND.upper()}",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port}),
    )
    return make_conn(CONN, server.url, requests_per_minute=RPM, limit_backend_conn_id=BACKEND)


def _window() -> tuple[int, int]:
    from airflow_agentchat.hooks.limits import moving_window

    return moving_window(RPM)


def _max_in_window(stamps: list[float], width: float) -> int:
    return max((bisect.bisect_left(stamps, t + width) - i for i, t in enumerate(stamps)), default=0)


def _child(spec: dict[str, Any], results: Any) -> None:
    from rate_limit_sender import main

    results.put(main(spec))


def _senders(*specs: dict[str, Any], on_start: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Run each spec in a process of its own (forked, see rate_limit_sender.py), all starting together."""
    from rate_limit_sender import warm

    warm()  # before the fork: each child would spend seconds importing aiohttp and redis
    context = multiprocessing.get_context("fork")  # a fresh interpreter would spend seconds importing Airflow
    results = context.Queue()
    start_at = time.time() + 1.0
    procs = [
        context.Process(target=_child, args=({"start_at": start_at, "order": i, **spec}, results))
        for i, spec in enumerate(specs)
    ]
    for proc in procs:
        proc.start()
    if on_start is not None:
        time.sleep(max(0.0, start_at - time.time()))
        on_start()
    reports = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    return sorted(reports, key=lambda report: report["order"])


def _warm(stamps: list[float]) -> list[float]:
    """The arrivals after the first second. A cold process opens its connections after its first slots were
    granted: on this busy 2-core machine those first requests can arrive a few hundred milliseconds late, on
    top of the next window's. The limit is judged once the senders are warm."""
    return [t for t in stamps if t >= stamps[0] + 1.0]


def _arrivals(server) -> list[float]:
    return sorted(server.stats()["timestamps"])


def test_two_processes_share_one_limit_and_use_it(shared_conn, server, redis_server):
    """Two processes (two tasks on two workers): together at most the limit in every window, >= 0.9 of it."""
    amount, seconds = _window()
    _senders({"conn_id": shared_conn, "seconds": 3.0}, {"conn_id": shared_conn, "seconds": 3.0, "stream": True})
    stamps = _arrivals(server)
    assert _max_in_window(_warm(stamps), seconds) <= LIMIT
    # Used: the busy period held (nearly) the whole limit.
    busy = stamps[-1] - stamps[0]
    assert len(stamps) >= 0.9 * amount * busy / seconds
    # The key names the agent (a hash of its host and path), never its access key.
    keys = [key.decode() for key in redis_server.client.keys("*")]
    assert keys and all("agentchat" in key and CANARY_KEY not in key for key in keys)
    assert not any(CANARY_KEY.encode() in (redis_server.client.dump(key) or b"") for key in keys)


def test_a_sender_that_finishes_leaves_its_share_to_the_other(shared_conn, server):
    amount, seconds = _window()
    reports = _senders({"conn_id": shared_conn, "seconds": 3.0, "count": 5}, {"conn_id": shared_conn, "seconds": 3.0})
    assert reports[0]["sent"] == 5
    stamps = _arrivals(server)
    # After the small sender is done (its five requests go out in the first second), the other one alone uses
    # the whole limit, not half of it as a static share would.
    later = [t for t in stamps if t >= stamps[0] + seconds / 2]
    span = later[-1] - later[0]
    assert len(later) >= 0.9 * amount * span / seconds
    assert _max_in_window(_warm(stamps), seconds) <= LIMIT


def test_two_processes_share_one_token_limit_through_redis(server, redis_server, make_conn, monkeypatch):
    """Forked senders: this runs before any test that sends from this process (a fork copies its threads' locks)."""
    from airflow_agentchat.hooks import limits

    monkeypatch.setattr(limits, "TOKEN_WINDOW", 2)  # inherited by the forked senders
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{BACKEND.upper()}",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port}),
    )
    from airflow_agentchat.spend import DEFAULT_COMPLETION_TOKENS, estimate

    per_request = (
        estimate([{"role": "user", "content": "limited 1"}]) + DEFAULT_COMPLETION_TOKENS
    )  # the senders' prompts ("limited N") and no completion cap
    tpm = 5 * per_request * 30  # five requests' worth in any two seconds
    conn = make_conn(CONN, server.url, tokens_per_minute=tpm, limit_backend_conn_id=BACKEND)
    reports = _senders({"conn_id": conn, "seconds": 10, "count": 3}, {"conn_id": conn, "seconds": 10, "count": 3})
    assert [(report["sent"], report["error"]) for report in reports] == [(3, None), (3, None)]
    stamps = _arrivals(server)
    # Together five in the first window, the sixth once it has passed; each keeping its own budget, all six
    # would go at once. (The cut is before the window's end: the cold first requests arrive a little late.)
    assert len(stamps) == 6 and sum(t < stamps[0] + 1.5 for t in stamps) == 5
    assert any(":tokens" in key.decode() for key in redis_server.client.keys("*"))


def test_the_sync_path_takes_slots_of_the_same_limit(shared_conn, server):
    """create_chat_completion (the completion operator, the connection test) shares the limit with a batch."""
    amount, seconds = _window()
    reports = _senders({"conn_id": shared_conn, "seconds": 3.0, "sync": True}, {"conn_id": shared_conn, "seconds": 3.0})
    assert reports[0]["sent"] > 0 and reports[0]["error"] is None
    stamps = _arrivals(server)
    assert _max_in_window(_warm(stamps), seconds) <= LIMIT
    assert len(stamps) >= 0.9 * amount * (stamps[-1] - stamps[0]) / seconds


def test_redis_killed_mid_run_fails_closed(shared_conn, server, redis_server):
    """No backend, no sending: the error says which backend and what to do; nothing goes over the limit."""
    _, seconds = _window()
    killed: list[float] = []

    def kill_soon() -> None:
        def kill() -> None:
            redis_server.kill()
            killed.append(time.time())

        threading.Timer(1.0, kill).start()

    reports = _senders(
        {"conn_id": shared_conn, "seconds": 4.0}, {"conn_id": shared_conn, "seconds": 4.0}, on_start=kill_soon
    )
    for report in reports:
        error = report["error"]
        assert error["kind"] == "rate_limit_backend_error"
        assert BACKEND in error["message"] and "limit_backend_fallback" in error["message"]
        assert CANARY_KEY not in error["message"]
    stamps = _arrivals(server)
    assert stamps and _max_in_window(_warm(stamps), seconds) <= LIMIT
    # Requests granted before the kill may still arrive a moment later; none granted after it.
    assert all(t <= killed[0] + 0.3 for t in stamps)


def test_static_share_fallback_keeps_sending_within_the_share(server, make_conn, monkeypatch):
    """Opted in: an unreachable backend falls back to this task's static share, paced in-process."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{BACKEND.upper()}", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": _free_port()})
    )
    conn = make_conn(
        CONN, server.url, requests_per_minute=600, limit_backend_conn_id=BACKEND, limit_backend_fallback="static_share"
    )
    (report,) = _senders({"conn_id": conn, "seconds": 1.5})
    stamps = _arrivals(server)
    assert report["error"] is None and len(stamps) == report["sent"] > 0
    # Paced at 600 * 0.98 a minute: one request every ~0.102 s, however many coroutines wait.
    assert _max_in_window(stamps, 1.0) <= 11  # one more when the first arrival was late; unpaced: dozens


def test_a_429_seen_by_one_sender_pauses_the_other(shared_conn, server, redis_server):
    """Two hooks (each with its own in-process pause): the 429 one saw stops the other, through Redis."""
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    server.add_faults([{"kind": "429", "retry_after": 1, "times": 1, "match": "first"}])

    def first() -> None:
        AgentChatHook(shared_conn, max_retries=1).create_chat_completion([{"role": "user", "content": "first"}])

    def other() -> None:
        # Starts once the agent has answered the first sender with its 429, and that sender has had a moment
        # to read it.
        for _ in range(500):
            if server.stats(timestamps=False)["by_status"].get("429"):
                break
            time.sleep(0.01)
        time.sleep(0.2)
        AgentChatHook(shared_conn, max_retries=0).create_chat_completion([{"role": "user", "content": "other"}])

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(first), pool.submit(other)]:
            future.result()
    stats = server.stats()
    assert stats["by_status"] == {"429": 1, "200": 2}
    stamps = sorted(stats["timestamps"])
    # Nothing after the 429 until its retry-after second has passed, from either sender.
    assert stamps[1] - stamps[0] >= 0.9


def test_without_a_backend_the_limit_is_per_process_and_sync_requests_are_paced(server, make_conn):
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    conn = make_conn(CONN, server.url, requests_per_minute=300)
    hook = AgentChatHook(conn, max_retries=0)
    for i in range(6):
        hook.create_chat_completion([{"role": "user", "content": f"paced {i}"}])
    stamps = _arrivals(server)
    # One every 60 / (300 * 0.98) s: five gaps take about a second (unpaced, a few milliseconds).
    assert len(stamps) == 6 and stamps[-1] - stamps[0] >= 0.8


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"requests_per_minute": 0}, "'requests_per_minute' must be a positive number"),
        ({"tokens_per_minute": "lots"}, "'tokens_per_minute' must be a positive number"),
        ({"tokens_per_minute": -100}, "'tokens_per_minute' must be a positive number"),
        ({"limit_backend_fallback": "open"}, "'limit_backend_fallback' must be one of fail, static_share"),
        ({"limit_backend_conn_id": 5}, "'limit_backend_conn_id' must be a connection id"),
    ],
)
def test_bad_limit_extras_are_refused_before_sending(server, make_conn, extra, words):
    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    conn = make_conn(CONN, server.url, **extra)
    with pytest.raises(AgentChatError, match=words):
        AgentChatHook(conn).create_chat_completion([{"role": "user", "content": "x"}])
    assert server.stats()["total"] == 0


def test_the_agent_key_hashes_host_and_path_only():
    from airflow_agentchat.hooks.limits import agent_key

    assert agent_key("https://a.example/agent") == agent_key("https://A.example/agent")
    assert agent_key("https://a.example/agent") != agent_key("https://a.example/other")
    assert "a.example" not in agent_key("https://a.example/agent")


def test_a_mapped_batch_without_a_backend_warns_and_paces_at_its_static_share(server, make_conn, tmp_path, capsys):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    conn = make_conn(CONN, server.url, requests_per_minute=2400)  # 40 a second; a shard of four gets 10
    op = AgentChatBatchOperator(
        task_id="ask",
        prompts=[f"share {i}" for i in range(20)],
        output_path=f"file://{tmp_path}/out.jsonl",
        agentchat_conn_id=conn,
        max_concurrency=8,
    )
    shard = FakeTI("dag", "ask", "run", 2, 1, mapped=4)  # the task instance a mapped shard sees: map index 2 of 4
    summary = op.execute({"ti": shard})
    assert summary["succeeded"] == 20
    assert summary["rate_share"]["shards_at_once"] == 4
    assert summary["rate_share"]["connection_requests_per_minute"] == 2400
    assert "names no limit_backend_conn_id" in capsys.readouterr().out
    assert _max_in_window(_arrivals(server), 1.0) <= 11  # its share, 10 a second (one more at a late edge)


def test_the_operator_can_lower_the_connection_limit_but_not_raise_it(server, make_conn, tmp_path):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    conn = make_conn(CONN, server.url, requests_per_minute=600)

    def run(rpm: float, name: str) -> dict[str, Any]:
        op = AgentChatBatchOperator(
            task_id="ask",
            prompts=[f"{name} {i}" for i in range(12)],
            output_path=f"file://{tmp_path}/{name}.jsonl",
            agentchat_conn_id=conn,
            max_concurrency=8,
            requests_per_minute=rpm,
        )
        return op.execute({"ti": None})

    assert run(6000, "higher")["rate_share"]["requests_per_minute"] is None  # the connection's 600 holds
    assert _max_in_window(_arrivals(server), 1.0) <= 11
    server.reset()
    assert run(300, "lower")["rate_share"]["requests_per_minute"] == 300
    assert _max_in_window(_arrivals(server), 1.0) <= 6


# ------------------------------------------------------------------------------------------- tokens_per_minute


def _reserved(prompt: str, max_tokens: int | None = None) -> int:
    """What one attempt reserves: the one estimator's prompt tokens plus the completion cap (or its default)."""
    from airflow_agentchat.spend import DEFAULT_COMPLETION_TOKENS, estimate

    return estimate([{"role": "user", "content": prompt}]) + (max_tokens or DEFAULT_COMPLETION_TOKENS)


@pytest.fixture()
def short_token_window(monkeypatch) -> int:
    """A token window of a second or two instead of ten, so a test sees it fill and free in a few seconds."""
    from airflow_agentchat.hooks import limits

    monkeypatch.setattr(limits, "TOKEN_WINDOW", 1)
    monkeypatch.setattr(limits, "_TOKEN_WINDOWS", {})  # a window made with another length is not reused
    return 1


def test_the_sync_path_waits_for_token_budget(server, make_conn, short_token_window):
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    per_request = _reserved("tokens 1", 3)
    conn = make_conn(CONN, server.url, tokens_per_minute=2 * per_request * 60)  # two requests' worth a second
    hook = AgentChatHook(conn, max_retries=0)
    for i in range(6):
        hook.create_chat_completion([{"role": "user", "content": f"tokens {i}"}], max_tokens=3)
    stamps = _arrivals(server)
    # Unlimited, all six arrive within milliseconds; the budget lets two through a second, so no 0.9 s holds
    # more than two (one more when the cold first ones arrive late at a window's edge).
    assert len(stamps) == 6 and _max_in_window(stamps, 0.9) <= 3


def test_the_async_path_waits_for_token_budget(server, make_conn, short_token_window):
    import asyncio

    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    per_request = _reserved("tokens 1", 3)
    conn = make_conn(CONN, server.url, tokens_per_minute=2 * per_request * 60)
    hook = AgentChatHook(conn, max_retries=0)

    async def run() -> None:
        try:
            messages = [[{"role": "user", "content": f"tokens {i}"}] for i in range(6)]
            await asyncio.gather(*(hook.acreate_chat_completion(m, max_tokens=3) for m in messages))
        finally:
            await hook.aclose()

    asyncio.run(run())
    stamps = _arrivals(server)
    assert len(stamps) == 6 and _max_in_window(stamps, 0.9) <= 3  # as for the sync path


def test_the_batch_leaves_the_connection_token_limit_to_the_hook(server, make_conn, tmp_path):
    """One place takes the connection's token limit (the hook); the batch's own gate only a lower one."""
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    conn = make_conn(CONN, server.url, tokens_per_minute=60000)

    def gate(tpm: float | None) -> Any:
        op = AgentChatBatchOperator(
            task_id="ask", prompts=["x"], output_path=f"file://{tmp_path}/o.jsonl", agentchat_conn_id=conn
        )
        op.tokens_per_minute = tpm
        return op.gate

    assert gate(None).tokens_per_minute is None
    assert gate(90000).tokens_per_minute is None
    assert gate(30000).tokens_per_minute == 30000
    assert gate(None).active is False  # the gate holds no token limiter of its own
