"""The batch's circuit breaker: decisions only, on an injected clock."""

from __future__ import annotations

import pytest

from airflow_agentchat.batch.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count(clock):
    breaker = Breaker(3, 60, clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    breaker.succeeded()  # the streak starts again
    for _ in range(2):
        breaker.failed()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failed()
    assert breaker.state == OPEN and breaker.opened == 1
    assert not breaker.allow() and breaker.remaining() == 60


def test_after_the_cooldown_one_probe_goes_and_its_success_closes(clock):
    breaker = Breaker(1, 30, clock)
    breaker.failed()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow() and breaker.state == HALF_OPEN  # the probe
    assert not breaker.allow() and not breaker.allow()  # everyone else skips while it is in flight
    breaker.succeeded()
    assert breaker.state == CLOSED and all(breaker.allow() for _ in range(5))


def test_a_failed_probe_opens_it_for_another_cooldown(clock):
    breaker = Breaker(2, 10, clock)
    breaker.failed()
    breaker.failed()
    clock.now += 10
    assert breaker.allow()
    breaker.failed()  # one failure is enough in half-open
    assert breaker.state == OPEN and breaker.opened == 2 and breaker.remaining() == 10
    assert not breaker.allow()


def test_failures_of_requests_sent_before_it_opened_do_not_extend_the_cooldown(clock):
    breaker = Breaker(1, 10, clock)
    breaker.failed()
    clock.now += 5
    breaker.failed()  # in flight when it opened
    assert breaker.remaining() == 5 and breaker.opened == 1


def test_an_abandoned_probe_lets_the_next_item_probe(clock):
    breaker = Breaker(1, 0, clock)
    breaker.failed()
    assert breaker.allow() and not breaker.allow()
    breaker.abandoned()  # e.g. the budget had no room: nothing was sent
    assert breaker.allow()


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1), (1, -1)])
def test_bad_settings_are_refused(failures, cooldown):
    with pytest.raises(ValueError, match="breaker_"):
        Breaker(failures, cooldown)
