"""The task state store's one owner: one write rule (never expire) and one error policy for both records."""

from __future__ import annotations

import logging

import pytest
from fakes import FakeStateStore

from airflow_agentchat import compat
from airflow_agentchat.operators.task_state import KEY, SPEND_KEY, RoundState, TaskStore, load_spend, save_spend
from airflow_agentchat.usage import TokenUsage

LOG = logging.getLogger("test_task_state")


@pytest.mark.skipif(not compat.HAS_TASK_STATE_STORE, reason=compat.NO_TASK_STATE_STORE or "")
def test_the_conversation_and_the_spend_are_written_under_one_retention_rule():
    store = FakeStateStore()
    RoundState(store, "fp").save()
    save_spend(TaskStore(store, LOG), TokenUsage(3, 4, 7))
    assert set(store.retention) == {KEY, SPEND_KEY}
    assert all(retention is compat.never_expire() for retention in store.retention.values())
    assert load_spend(TaskStore(store, LOG)).total_tokens == 7


def test_a_failed_write_or_delete_is_a_warning_for_both_records(caplog):
    caplog.set_level(logging.WARNING)
    store = FakeStateStore(fail="set delete")
    state = RoundState(TaskStore(store, LOG), "fp")
    state.save()  # the answer it would keep is paid for: the try goes on
    save_spend(TaskStore(store, LOG), TokenUsage(1, 1, 2))
    TaskStore(store, LOG).delete(SPEND_KEY)
    warned = [r.getMessage() for r in caplog.records]
    assert sum("Could not save" in w for w in warned) == 2
    assert any("Could not delete agentchat_spend" in w and "store down" in w for w in warned)


def test_a_failed_read_fails_before_anything_is_sent():
    with pytest.raises(RuntimeError, match="store down"):
        load_spend(TaskStore(FakeStateStore(fail="get"), LOG))
    with pytest.raises(RuntimeError, match="store down"):
        RoundState.load({"task_state_store": FakeStateStore(fail="get")}, [], {}, LOG)


def test_no_store_keeps_nothing_and_fails_nothing():
    store = TaskStore.of({}, LOG)
    assert not store.available and store.read(KEY) is None and store.write(KEY, {"a": 1}) is False
    store.delete(KEY)
    assert load_spend(store).total_tokens == 0
