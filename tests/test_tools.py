"""Python tools: the loop the operator runs, against a scripted server (exact wire) and the dev server (streaming).

The retry that resumes in a new process under a real scheduler is in ``integration/test_approval.py``; here the
in-process tests use a dict in place of the task state store to check what is saved after each step.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, Literal

import pytest
from fakes import FakeStateStore, FakeTI, Imported, import_in_fresh_python
from pydantic import BaseModel

from airflow_agentchat.compat import HAS_TASK_STATE_STORE, NO_TASK_STATE_STORE
from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.tools import PythonTool, Toolbox, ToolError, serialize_result

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
CALLS: list[tuple[str, dict]] = []


def lookup_order(order_id: str, include_items: bool = False) -> dict:
    """Look up one order in the shop database.

    :param order_id: the order number, like "A-1001".
    :param include_items: also list the items.
    """
    CALLS.append(("lookup_order", {"order_id": order_id, "include_items": include_items}))
    if order_id == "missing":
        raise LookupError(f"no order {order_id}")
    return {"order_id": order_id, "status": "shipped", "total": 42.5, "currency": "EUR"}


def convert_currency(amount: float, to: Literal["EUR", "USD", "GBP"]) -> float:
    """Convert an amount of euros.

    Args:
        amount: the amount in EUR.
        to: the currency to convert to.
    """
    CALLS.append(("convert_currency", {"amount": amount, "to": to}))
    return round(amount * {"EUR": 1.0, "USD": 1.1, "GBP": 0.85}[to], 2)


def call(name: str, args: Any, call_id: str = "call_1") -> dict:
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def answer(content: str | None = None, calls: list[dict] | None = None) -> tuple[int, dict, bytes]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else "stop"
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE}
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def sent(scripted, i: int) -> dict:
    return json.loads(scripted.requests[i].body)


@pytest.fixture()
def run(scripted, make_conn):
    def go(*replies, context: dict | None = None, **kwargs) -> tuple[Any, FakeTI]:
        scripted.script(*replies)
        CALLS.clear()
        ti = FakeTI()
        kwargs.setdefault("prompt", "Where is order A-1001?")
        kwargs.setdefault("tools", [lookup_order, convert_currency])
        operator = AgentChatCompletionOperator(
            task_id="t", agentchat_conn_id=make_conn("tools", scripted.url), max_retries=0, **kwargs
        )
        return operator.execute({"ti": ti, **(context or {})}), ti

    return go


# ---------------------------------------------------------------------------------------------- schemas


def test_schema_from_the_signature_and_description_from_the_docstring():
    tool = PythonTool.from_callable(lookup_order).definition["function"]
    assert tool["name"] == "lookup_order"
    assert tool["description"] == "Look up one order in the shop database."
    assert tool["parameters"] == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": 'the order number, like "A-1001".'},
            "include_items": {"type": "boolean", "default": False, "description": "also list the items."},
        },
        "required": ["order_id"],
    }
    google = PythonTool.from_callable(convert_currency).definition["function"]["parameters"]["properties"]
    assert google["to"] == {
        "type": "string",
        "enum": ["EUR", "USD", "GBP"],
        "description": "the currency to convert to.",
    }
    assert google["amount"]["description"] == "the amount in EUR."


def test_signatures_that_cannot_be_tools_are_refused_naming_the_tool():
    def spread(*names: str) -> None:
        """Takes anything."""

    with pytest.raises(InvalidRequestError, match=r"tools\.spread: \*names: \*args / \*\*kwargs cannot be described"):
        PythonTool.from_callable(spread)

    def options(**settings: str) -> None:
        """Takes anything."""

    with pytest.raises(InvalidRequestError, match=r"tools\.options: \*\*settings: \*args / \*\*kwargs"):
        PythonTool.from_callable(options)
    with pytest.raises(ValueError, match="a def, not a lambda"):
        AgentChatCompletionOperator(task_id="t", prompt="x", tools=[lambda x: x])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tool_rounds": 0}, "max_tool_rounds must be a whole number >= 1"),
        ({"tool_errors": "ignore"}, "tool_errors must be one of return, raise"),
        ({"tools": [lookup_order, lookup_order]}, "two Python tools have the same name"),
        ({"approval_default": "maybe"}, "approval_default must be 'approve', 'reject' or None"),
        ({"approval_timeout": -5}, "approval_timeout must be a timedelta or seconds > 0"),
        ({"require_approval": True, "output": "message"}, "require_approval reviews the answer"),
    ],
)
def test_bad_tool_and_approval_options_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgentChatCompletionOperator(task_id="t", prompt="x", **kwargs)


def test_results_are_json_text_and_what_json_cannot_hold_is_a_clear_error():
    class Order(BaseModel):
        id: str
        day: date

    assert serialize_result("plain text", "t") == "plain text"
    assert json.loads(serialize_result(Order(id="A", day=date(2026, 1, 2)), "t")) == {"id": "A", "day": "2026-01-02"}
    assert json.loads(serialize_result({"n": 1, "s": {3}}, "t")) == {"n": 1, "s": [3]}
    with pytest.raises(ToolError, match="Tool t returned a lock, which cannot be sent to the agent as JSON"):
        import threading

        serialize_result(threading.Lock(), "t")


def test_importing_the_operators_does_not_load_the_tool_loop():
    """Tools, review and state modules are loaded in execute; parsing a DAG that uses them pays for none."""
    imported = import_in_fresh_python(
        "import airflow_agentchat.operators.agent_chat, airflow_agentchat.decorators.agent_chat",
        then="from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator\n"
        "def f(x: str) -> str: ...\n"
        "AgentChatCompletionOperator(task_id='t', prompt='x', tools=[f], require_approval=True)",
    )
    heavy = (
        "airflow_agentchat.tools",
        "airflow_agentchat.operators.approval",
        "airflow_agentchat.operators.task_state",
        "airflow.providers.standard",
    )
    assert Imported.matching(imported.new, heavy) == []


# ---------------------------------------------------------------------------------------------- the loop


def test_one_tool_call_is_run_answered_and_the_final_answer_returned(run, scripted):
    value, ti = run(answer(calls=[call("lookup_order", {"order_id": "A-1001"})]), answer("It shipped."))
    assert value == "It shipped."
    assert CALLS == [("lookup_order", {"order_id": "A-1001", "include_items": False})]
    first, second = sent(scripted, 0), sent(scripted, 1)
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order", "convert_currency"]
    assert "tool_choice" not in first
    assistant, result = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_1" and assistant["role"] == "assistant"
    assert result == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"order_id":"A-1001","status":"shipped","total":42.5,"currency":"EUR"}',
    }
    assert ti.xcom["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    (entry,) = ti.xcom["tool_trace"]
    assert entry["round"] == 1 and entry["name"] == "lookup_order" and entry["error"] is None
    assert entry["arguments"] == {"order_id": "A-1001"} and '"status":"shipped"' in entry["result"]
    assert isinstance(entry["seconds"], float)
    assert ti.xcom["response"]["choices"][0]["message"]["content"] == "It shipped."


def test_parallel_calls_in_one_answer_are_all_answered_in_order(run, scripted):
    calls = [
        call("lookup_order", {"order_id": "A-7"}, "c1"),
        call("convert_currency", {"amount": 10, "to": "USD"}, "c2"),
    ]
    value, ti = run(answer(calls=calls), answer("11 dollars"))
    assert value == "11 dollars"
    assert [name for name, _ in CALLS] == ["lookup_order", "convert_currency"]
    results = sent(scripted, 1)["messages"][-2:]
    assert [(m["role"], m["tool_call_id"]) for m in results] == [("tool", "c1"), ("tool", "c2")]
    assert results[1]["content"] == "11.0"
    assert [(e["round"], e["name"]) for e in ti.xcom["tool_trace"]] == [(1, "lookup_order"), (1, "convert_currency")]


def test_invalid_arguments_go_back_to_the_agent_and_the_function_is_not_called(run, scripted):
    value, ti = run(
        answer(calls=[call("convert_currency", {"amount": "lots", "to": "JPY", "rate": 1})]),
        answer(calls=[call("convert_currency", {"amount": 5, "to": "GBP"}, "call_2")]),
        answer("4.25 pounds"),
    )
    assert value == "4.25 pounds"
    assert CALLS == [("convert_currency", {"amount": 5.0, "to": "GBP"})]
    error = sent(scripted, 1)["messages"][-1]["content"]
    assert error.startswith("Error: invalid arguments for convert_currency:")
    assert "amount: Input should be a valid number" in error
    assert "to: Input should be 'EUR', 'USD' or 'GBP'" in error and "rate: Extra inputs are not permitted" in error
    trace = ti.xcom["tool_trace"]
    assert [(e["round"], e["error"]) for e in trace] == [(1, "invalid arguments"), (2, None)]


def test_arguments_that_are_not_json_and_unknown_tools_are_answered_with_the_error(run, scripted):
    calls = [call("lookup_order", "{order_id: A}", "c1"), call("delete_everything", {}, "c2")]
    value, _ = run(answer(calls=calls), answer("sorry"))
    assert value == "sorry" and CALLS == []
    first, second = sent(scripted, 1)["messages"][-2:]
    assert "the arguments are not valid JSON" in first["content"]
    assert second["content"].startswith("Error: there is no tool named 'delete_everything'")


def test_max_tool_rounds_fails_after_that_many_rounds(run, scripted):
    scripted.script()
    with pytest.raises(ToolError, match=r"still called tools \(lookup_order\) after max_tool_rounds=2 rounds") as info:
        run(
            *[answer(calls=[call("lookup_order", {"order_id": f"A-{i}"}, f"c{i}")]) for i in range(5)],
            max_tool_rounds=2,
        )
    assert len(scripted.requests) == 3  # two rounds run, the third answer still called a tool
    assert len(CALLS) == 2
    assert info.value.tool is None


def test_max_tool_rounds_pushes_usage_and_trace(scripted, make_conn):
    scripted.script(*[answer(calls=[call("lookup_order", {"order_id": "A"}, f"c{i}")]) for i in range(3)])
    ti = FakeTI()
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=make_conn("tools_max", scripted.url), prompt="x", tools=[lookup_order],
        max_tool_rounds=1,
    )  # fmt: skip
    with pytest.raises(ToolError):
        operator.execute({"ti": ti})
    assert ti.xcom["usage"]["total_tokens"] == 30 and len(ti.xcom["tool_trace"]) == 1


def test_tool_errors_return_sends_the_exception_to_the_agent(run, scripted):
    value, ti = run(answer(calls=[call("lookup_order", {"order_id": "missing"})]), answer("No such order."))
    assert value == "No such order."
    assert sent(scripted, 1)["messages"][-1]["content"] == "Error: lookup_order raised LookupError: no order missing"
    assert ti.xcom["tool_trace"][0]["error"] == "LookupError: no order missing"


def test_tool_errors_raise_fails_the_task_naming_the_tool_and_round(run, scripted):
    with pytest.raises(ToolError, match=r"Tool lookup_order raised LookupError: no order missing \(round 1") as info:
        run(answer(calls=[call("lookup_order", {"order_id": "missing"})]), answer("never"), tool_errors="raise")
    assert info.value.tool == "lookup_order" and info.value.round == 1
    assert isinstance(info.value.__cause__, LookupError)
    assert len(scripted.requests) == 1


def test_a_result_json_cannot_hold_fails_the_task(run, scripted):
    def make_lock() -> object:
        """Returns something that is not data."""
        import threading

        return threading.Lock()

    with pytest.raises(ToolError, match="Tool make_lock returned a lock"):
        run(answer(calls=[call("make_lock", {})]), answer("never"), tools=[make_lock])


def test_dict_tools_beside_python_tools_are_left_to_the_dag(run, scripted):
    """A call of one of the DAG's own tool dicts ends the loop: the task returns the message, as before."""
    own = {"type": "function", "function": {"name": "escalate", "parameters": {"type": "object", "properties": {}}}}
    value, _ = run(answer(calls=[call("escalate", {})]), tools=[own, lookup_order], output="message")
    assert value["tool_calls"][0]["function"]["name"] == "escalate"
    assert [t["function"]["name"] for t in sent(scripted, 0)["tools"]] == ["escalate", "lookup_order"]
    assert len(scripted.requests) == 1 and CALLS == []


def test_the_key_an_agent_echoes_stays_out_of_the_trace(run, scripted, canary_key):
    _, ti = run(answer(calls=[call("lookup_order", {"order_id": canary_key})]), answer("done"))
    assert canary_key not in json.dumps(ti.xcom["tool_trace"])
    assert ti.xcom["tool_trace"][0]["arguments"] == {"order_id": "***"}


# ---------------------------------------------------------------------------------------------- with output schema


class Reply(BaseModel):
    message: str
    refund_usd: float


def test_output_schema_with_tools_lets_the_agent_call_tools_then_validates_the_final_answer(run, scripted):
    value, ti = run(
        answer(calls=[call("convert_currency", {"amount": 20, "to": "USD"})]),
        answer(calls=[call("final_result", {"message": "Refunded", "refund_usd": "oops"}, "f1")]),
        answer(calls=[call("final_result", {"message": "Refunded", "refund_usd": 22.0}, "f2")]),
        output_schema=Reply,
    )
    assert value == {"message": "Refunded", "refund_usd": 22.0}
    first = sent(scripted, 0)
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order", "convert_currency", "final_result"]
    assert first["tool_choice"] == "required"  # forcing final_result would leave the tools unreachable
    repair = sent(scripted, 2)
    assert "refund_usd: Input should be a valid number" in repair["messages"][-1]["content"]
    assert repair["tool_choice"] == {"type": "function", "function": {"name": "final_result"}}  # the answer only
    assert ti.xcom["usage"]["total_tokens"] == 45
    assert len(ti.xcom["tool_trace"]) == 1


def test_output_tool_called_beside_a_python_tool_is_answered_and_the_tool_runs(run, scripted):
    calls = [call("lookup_order", {"order_id": "A"}, "c1"), call("final_result", {"message": 1}, "c2")]
    value, _ = run(
        answer(calls=calls),
        answer(calls=[call("final_result", {"message": "ok", "refund_usd": 0}, "f")]),
        output_schema=Reply,
    )
    assert value == {"message": "ok", "refund_usd": 0.0} and len(CALLS) == 1
    replies = sent(scripted, 1)["messages"][-2:]
    assert replies[1]["tool_call_id"] == "c2" and replies[1]["content"].startswith("Not accepted:")


def test_a_json_repair_round_asks_for_the_answer_not_for_more_tools(run, scripted):
    value, _ = run(
        answer(calls=[call("lookup_order", {"order_id": "A"})]),
        answer('Tool said {"order_id": "A"}'),
        answer('{"message": "Shipped", "refund_usd": 0}'),
        output_schema=Reply,
        output_strategy="json",
    )
    assert value == {"message": "Shipped", "refund_usd": 0.0}
    assert "tool_choice" not in sent(scripted, 0) and "tool_choice" not in sent(scripted, 1)
    assert sent(scripted, 2)["tool_choice"] == "none"


# ---------------------------------------------------------------------------------------------- resume (in process)


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason=NO_TASK_STATE_STORE or "")
def test_each_step_is_saved_and_a_retry_repeats_no_tool_and_no_paid_answer(run, scripted, tmp_path):
    """Parallel calls, the second raises on the first try: the retry runs only that one, sends one request."""
    count = tmp_path / "flaky"

    def flaky(note: str) -> str:
        """Fails on its first call."""
        calls = int(count.read_text()) if count.exists() else 0
        count.write_text(str(calls + 1))
        if calls == 0:
            raise ConnectionError("database went away")
        return f"saved {note}"

    store = FakeStateStore()
    calls = [call("lookup_order", {"order_id": "A"}, "c1"), call("flaky", {"note": "n"}, "c2")]
    with pytest.raises(ToolError, match="flaky raised ConnectionError"):
        run(answer(calls=calls), tools=[lookup_order, flaky], tool_errors="raise", context={"task_state_store": store})
    saved = store.get("agentchat_conversation")
    assert saved["pending"]["results"].keys() == {"c1"} and saved["tool_rounds"] == 0
    assert saved["usage"]["total_tokens"] == 15

    scripted.script(answer("all saved"))
    ti = FakeTI()
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id="tools", prompt="Where is order A-1001?", max_retries=0,
        tools=[lookup_order, flaky], tool_errors="raise",
    )  # fmt: skip
    CALLS.clear()
    assert operator.execute({"ti": ti, "task_state_store": store}) == "all saved"
    assert CALLS == [] and count.read_text() == "2"  # lookup_order was not run again; flaky ran once more
    assert len(scripted.requests) == 1  # only the request after the round; the paid answer was not asked again
    messages = sent(scripted, 0)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert ti.xcom["usage"]["total_tokens"] == 30
    assert [e["name"] for e in ti.xcom["tool_trace"]] == ["lookup_order", "flaky"]
    assert store.data == {}  # a task that succeeds forgets its conversation


def test_an_answer_with_a_flood_of_calls_fails_before_any_runs(run, scripted):
    """1,500 calls in one answer: refused at once (max_tool_calls_per_round=64), nothing run, nothing saved."""
    store = FakeStateStore()
    flood = [call("lookup_order", {"order_id": f"A-{i}"}, f"c{i}") for i in range(1500)]
    with pytest.raises(ToolError, match=r"1500 tool calls in one answer, more than max_tool_calls_per_round=64"):
        run(answer(calls=flood), context={"task_state_store": store})
    assert CALLS == [] and len(scripted.requests) == 1 and store.writes == 0


def test_max_tool_calls_per_round_is_the_bound(run, scripted):
    calls = [call("lookup_order", {"order_id": f"A-{i}"}, f"c{i}") for i in range(3)]
    with pytest.raises(ToolError, match="max_tool_calls_per_round=2"):
        run(answer(calls=calls), max_tool_calls_per_round=2)
    value, _ = run(answer(calls=calls), answer("done"), max_tool_calls_per_round=3)
    assert value == "done" and len(CALLS) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_max_tool_calls_per_round_is_checked_at_parse_time(bad):
    with pytest.raises(ValueError, match="max_tool_calls_per_round must be a whole number >= 1"):
        AgentChatCompletionOperator(task_id="t", prompt="x", tools=[lookup_order], max_tool_calls_per_round=bad)


def test_the_state_is_written_once_per_round_not_once_per_call(run, scripted):
    """Three rounds of 20 calls: two writes a round (the paid answer, then the round's results)."""
    store = FakeStateStore()
    rounds = [answer(calls=[call("lookup_order", {"order_id": f"{r}-{i}"}, f"c{r}-{i}") for i in range(20)])
              for r in range(3)]  # fmt: skip
    value, _ = run(*rounds, answer("done"), context={"task_state_store": store})
    assert value == "done" and len(CALLS) == 60
    assert store.writes <= 2 * 3


def test_on_kill_stops_a_tool_round_before_its_next_call_and_saves_the_results(scripted, make_conn):
    store = FakeStateStore()
    ran: list[str] = []

    def slow_step(step: str) -> str:
        """One step of a long job."""
        ran.append(step)
        if len(ran) == 2:
            operator.on_kill()  # what Airflow's SIGTERM handler calls
        return f"did {step}"

    scripted.script(answer(calls=[call("slow_step", {"step": str(i)}, f"c{i}") for i in range(10)]))
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=make_conn("tools_kill", scripted.url), prompt="x", tools=[slow_step]
    )
    with pytest.raises(ToolError, match=r"Stopped on request \(SIGTERM\) in tool round 1 after 2 of 10 calls"):
        operator.execute({"ti": FakeTI(), "task_state_store": store})
    assert ran == ["0", "1"]
    assert store.get("agentchat_conversation")["pending"]["results"].keys() == {"c0", "c1"}


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason=NO_TASK_STATE_STORE or "")
def test_a_changed_request_does_not_resume_an_old_conversation(run, scripted):
    store = FakeStateStore()
    with pytest.raises(Exception, match="no scripted reply"):  # round 2 finds no reply: the task fails
        run(answer(calls=[call("lookup_order", {"order_id": "A"})]), context={"task_state_store": store})
    assert store.get("agentchat_conversation")["tool_rounds"] == 1
    value, _ = run(answer("fresh"), prompt="A different question", context={"task_state_store": store})
    assert value == "fresh" and [m["role"] for m in sent(scripted, 0)["messages"]] == ["user"]
    assert CALLS == []


def test_tasks_without_tools_or_review_never_touch_the_state_store(scripted, make_conn):
    store = FakeStateStore()
    scripted.script(answer("plain"))
    operator = AgentChatCompletionOperator(task_id="t", agentchat_conn_id=make_conn("plain", scripted.url), prompt="x")
    assert operator.execute({"ti": FakeTI(), "task_state_store": store}) == "plain"
    assert store.writes == 0


# ---------------------------------------------------------------------------------------------- dev server


def test_streaming_rounds_are_each_logged(devserver, make_conn, capfd):
    """The dev server calls the first tool, then answers from the tool results; both rounds stream."""
    ti = FakeTI()
    operator = AgentChatCompletionOperator(
        task_id="t",
        agentchat_conn_id=make_conn("tools_dev", devserver.url),
        prompt="Order?",
        stream=True,
        stream_options={"include_usage": True},
        tools=[convert_currency],
    )
    CALLS.clear()
    value = operator.execute({"ti": ti})
    assert value.startswith("Tool results: convert_currency=")
    assert len(CALLS) == 1
    log = "".join(capfd.readouterr())
    assert "Round 1: asking the agent" in log and "Round 2: asking the agent" in log
    assert "Round 1: convert_currency(" in log and "│ Tool results: convert_currency=" in log
    assert ti.xcom["usage"]["total_tokens"] > 0


def test_toolbox_answers_every_call_of_a_message():
    box = Toolbox([lookup_order])
    message = {"tool_calls": [call("lookup_order", {"order_id": "Z"}, "a"), {"function": {"name": "x"}}]}
    calls = box.calls_to_run(message)
    assert [c["id"] for c in calls] == ["a", "call_1"]
    assert box.calls_to_run({"content": "no calls"}) == []


def test_the_decorator_takes_python_tools(scripted, make_conn):
    from airflow_agentchat.decorators.agent_chat import _AgentChatDecoratedOperator

    def ask() -> str:
        return "Where is order A-1001?"

    scripted.script(answer(calls=[call("lookup_order", {"order_id": "A-1001"})]), answer("Shipped."))
    CALLS.clear()
    operator = _AgentChatDecoratedOperator(
        task_id="d", python_callable=ask, agentchat_conn_id=make_conn("tools_deco", scripted.url), tools=[lookup_order]
    )
    ti = FakeTI()
    assert operator.execute({"ti": ti}) == "Shipped."
    assert [name for name, _ in CALLS] == ["lookup_order"] and len(ti.xcom["tool_trace"]) == 1
