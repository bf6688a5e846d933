"""The retry controller alone: every decision of a request's retry loop, with a fake clock and no I/O."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    APIError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    StreamError,
)
from airflow_agentchat.hooks.retry import RetryController, RetryPolicy, SharedPause


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Run:
    """One request's controller on a shared pause and a fake clock; ``sleep`` advances the clock."""

    def __init__(self, clock: Clock, pause: SharedPause, max_retries: int = 3, cancelled: list[bool] | None = None):
        self.clock = clock
        self.flag = cancelled if cancelled is not None else [False]
        policy = RetryPolicy(max_retries=max_retries, jitter=lambda: 1.0)
        self.controller = RetryController(policy, pause, lambda: self.flag[0])

    def sleep(self, seconds: float) -> None:
        self.clock.now += seconds


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def pause(clock: Clock) -> SharedPause:
    return SharedPause(clock)


def test_back_off_is_exponential_then_the_last_error_is_raised_with_its_attempts(clock, pause):
    run = Run(clock, pause, max_retries=3)
    retries = run.controller
    delays = []
    for _ in range(3):
        assert retries.wait() == 0
        retries.sent()
        delays.append(retries.failed(ServerError(503, "busy")))
    assert delays == [0.5, 1.0, 2.0]
    assert pause.remaining() <= 0  # back-off without a server delay pauses nobody else
    retries.sent()
    last = ServerError(503, "still busy")
    with pytest.raises(ServerError) as info:
        retries.failed(last)
    assert info.value is last and last.attempts == 4


def test_back_off_is_capped():
    policy = RetryPolicy(max_retries=10, jitter=lambda: 1.0)
    assert [policy.delay(n, None) for n in (5, 6, 9)] == [16.0, 20.0, 20.0]


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError([("n", "too big")]),
        APIError(400, "bad"),
        RateLimitError(429, "quota", code="insufficient_quota"),
        StreamError("error event"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_final_error_is_raised_at_once(clock, pause, error):
    retries = Run(clock, pause).controller
    retries.sent()
    with pytest.raises(type(error)):
        retries.failed(error)
    assert error.attempts == 1


def test_zero_retries_gives_up_after_one_attempt(clock, pause):
    retries = Run(clock, pause, max_retries=0).controller
    retries.sent()
    with pytest.raises(AgentChatConnectionError):
        retries.failed(AgentChatConnectionError("refused"))


def test_the_server_delay_wins_and_is_capped_by_max_wait(clock, pause):
    retries = Run(clock, pause).controller
    retries.sent()
    assert retries.failed(ServerError(503, "busy", retry_after=7.0)) == 7.0
    retries.sent()
    assert retries.failed(ServerError(503, "busy", retry_after=3600.0)) == 120.0


def test_a_429_pauses_every_request_sharing_the_pause(clock, pause):
    limited, other = Run(clock, pause), Run(clock, pause)
    limited.controller.sent()
    assert limited.controller.failed(RateLimitError(429, "slow down")) == 0.5  # no header: back-off, still a pause
    assert other.controller.wait() == 0.5
    other.sleep(0.2)
    assert other.controller.wait() == pytest.approx(0.3)
    other.sleep(0.3)
    assert other.controller.wait() == 0


def test_a_named_delay_on_any_error_pauses_the_others_and_a_shorter_one_does_not_shorten_it(clock, pause):
    first, second, third = Run(clock, pause), Run(clock, pause), Run(clock, pause)
    first.controller.sent()
    first.controller.failed(ServerError(503, "busy", retry_after=4.0))
    second.controller.sent()
    second.controller.failed(RateLimitError(429, "slow", retry_after=1.0))
    assert third.controller.wait() == 4.0


def test_cancel_before_an_attempt_raises_with_the_attempts_sent(clock, pause):
    flag = [False]
    run = Run(clock, pause, cancelled=flag)
    retries = run.controller
    retries.sent()
    retries.failed(ServerError(503, "busy"))
    flag[0] = True
    with pytest.raises(AgentChatConnectionError, match="cancelled") as info:
        retries.wait()
    assert info.value.attempts == 1


def test_a_failure_after_cancel_is_not_retried(clock, pause):
    retries = Run(clock, pause, cancelled=[True]).controller
    retries.sent()
    error = ServerError(503, "busy")
    with pytest.raises(ServerError):
        retries.failed(error)
    assert error.attempts == 1
