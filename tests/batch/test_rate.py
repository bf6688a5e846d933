"""The batch task's own rate limits (batch/rate.py) through ``execute`` against the session dev server: requests
paced on a fixed timeline, a 429 pausing the whole batch, a token budget corrected by usage. Every assertion is on
what the dev server counted or on the output files, never on wall-clock time."""

from __future__ import annotations

import pytest
from batches import CONN, lines_of, make_op
from fakes import FakeTI

pytestmark = pytest.mark.serial  # judges pacing by the arrival times of requests


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url)


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
