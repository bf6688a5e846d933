"""The conversation object alone: every decision of the tool and repair loop, driven by a fake ``send``.

``Conversation`` does no I/O of its own (the operator gives it ``send``), so these tests need no server; the
same loop against real servers and Airflow is in test_tools.py, test_structured_output.py and
integration/test_approval.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fakes import FakeStateStore

from airflow_agentchat.models import ChatCompletion
from airflow_agentchat.operators.conversation import Conversation
from airflow_agentchat.operators.task_state import KEY, RoundState
from airflow_agentchat.structured_output import OutputSpec, OutputValidationError
from airflow_agentchat.tools import Toolbox, ToolError

LOG = logging.getLogger("test_conversation")
USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
RAN: list[str] = []


def add(a: int, b: int) -> int:
    """Add two numbers."""
    RAN.append(f"add {a} {b}")
    return a + b


def completion(content: str | None = None, calls: list[tuple[str, dict]] | None = None) -> ChatCompletion:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(calls)
        ]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
    return ChatCompletion.model_validate({"choices": [choice], "usage": USAGE})


class FakeSend:
    """Answers from a script and records what the conversation sent."""

    def __init__(self, *answers: ChatCompletion) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def __call__(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> ChatCompletion:
        self.sent.append((messages, params))
        return self.answers.pop(0)


def talk(send: FakeSend, *, state: RoundState | None = None, **kwargs: Any) -> Conversation:
    RAN.clear()
    kwargs.setdefault("toolbox", Toolbox([add]))
    kwargs.setdefault("spec", None)
    return Conversation(
        state or RoundState(None, "fp"), [{"role": "user", "content": "2+3?"}], {}, send=send, log=LOG, **kwargs
    )


def test_an_answer_without_tool_calls_ends_it_and_sends_nothing_more():
    send = FakeSend()
    final = talk(send).run(completion("5"))
    assert final.message["content"] == "5" and send.sent == [] and final.outcome is None


def test_a_tool_round_runs_the_calls_and_sends_the_results_back():
    send = FakeSend(completion("5"))
    conversation = talk(send)
    final = conversation.run(completion(calls=[("add", {"a": 2, "b": 3})]))
    assert RAN == ["add 2 3"] and final.message["content"] == "5"
    messages, _ = send.sent[0]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "c0", "content": "5"}
    assert conversation.state.tool_rounds == 1 and conversation.state.usage.total_tokens == 12


def test_the_state_is_written_twice_a_round_however_many_calls():
    store = FakeStateStore()
    state = RoundState(store, "fp")
    many = [("add", {"a": i, "b": 1}) for i in range(30)]
    talk(FakeSend(completion(calls=many), completion("done")), state=state).run(completion(calls=many))
    assert len(RAN) == 60 and store.writes == 4


def test_too_many_calls_in_one_answer_give_up_before_any_runs():
    conversation = talk(FakeSend(), max_tool_calls_per_round=3)
    with pytest.raises(ToolError, match="asked for 4 tool calls in one answer, more than max_tool_calls_per_round=3"):
        conversation.run(completion(calls=[("add", {"a": i, "b": 0}) for i in range(4)]))
    assert RAN == [] and conversation.gave_up == "tool_limit"


def test_max_tool_rounds_gives_up_with_the_tools_named():
    again = completion(calls=[("add", {"a": 1, "b": 1})])
    conversation = talk(FakeSend(again, again), max_tool_rounds=2)
    with pytest.raises(ToolError, match=r"still called tools \(add\) after max_tool_rounds=2"):
        conversation.run(again)
    assert len(RAN) == 2 and conversation.gave_up == "tool_limit"


def test_stopping_ends_the_round_before_the_next_call_and_saves_the_results():
    store = FakeStateStore()
    state = RoundState(store, "fp")
    conversation = talk(FakeSend(), state=state, stopping=lambda: len(RAN) >= 2)
    with pytest.raises(ToolError, match=r"Stopped on request \(SIGTERM\) in tool round 1 after 2 of 5 calls"):
        conversation.run(completion(calls=[("add", {"a": i, "b": 0}) for i in range(5)]))
    assert store.get(KEY)["pending"]["results"].keys() == {"c0", "c1"}
    assert conversation.gave_up is None  # not a limit: nothing extra to publish


def test_a_resumed_round_runs_only_the_calls_without_a_result():
    store = FakeStateStore()
    state = RoundState(store, "fp")
    calls = [("add", {"a": i, "b": 0}) for i in range(3)]
    with pytest.raises(ToolError):
        talk(FakeSend(), state=state, stopping=lambda: len(RAN) >= 1).run(completion(calls=calls))
    resumed = RoundState(store, "fp", store.get(KEY))
    send = FakeSend(completion("done"))
    assert talk(send, state=resumed).run().message["content"] == "done"
    assert RAN == ["add 1 0", "add 2 0"] and len(send.sent) == 1


def test_an_invalid_answer_is_repaired_then_gives_up_after_the_retries():
    spec = OutputSpec.build(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, strategy="json", retries=1
    )
    send = FakeSend(completion('{"n": "x"}'))
    conversation = talk(send, spec=spec, toolbox=None)
    with pytest.raises(OutputValidationError):
        conversation.run(completion("no json"))
    assert conversation.gave_up == "invalid_output" and len(send.sent) == 1
    assert send.sent[0][0][-1]["role"] == "user"  # the errors went back as a user message

    send = FakeSend(completion('{"n": 5}'))
    final = talk(send, spec=spec, toolbox=None).run(completion("no json"))
    assert final.outcome is not None and final.outcome.value == {"n": 5} and final.repairs == 1


def test_a_repair_with_tools_asks_for_the_final_answer_only():
    spec = OutputSpec.build({"type": "object", "properties": {"n": {"type": "integer"}}}, strategy="json", retries=1)
    send = FakeSend(completion('{"n": 1}'))
    talk(send, spec=spec).run(completion("no json"))
    assert send.sent[0][1]["tool_choice"] == "none"


def test_a_rejected_review_becomes_a_revision_request_through_the_state():
    store = FakeStateStore()
    state = RoundState(store, "fp")
    state.await_review(
        [{"role": "user", "content": "q"}],
        {"value": "a", "structured": False, "message": {"role": "assistant", "content": "a"}, "response": {}},
    )
    reopened = RoundState.reopen({"task_state_store": store})
    assert reopened is not None and reopened.final is not None
    reopened.ask_revision("too short")
    saved = store.get(KEY)
    assert saved["final"] is None
    assert saved["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "A reviewer rejected this answer: too short. Give a revised answer."},
    ]
    assert RoundState.reopen({}) is None
