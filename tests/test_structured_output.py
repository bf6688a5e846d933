"""Output schemas: the wire (scripted server), extraction and validation units, repair rounds and batches (the runs
under real Airflow are in integration/test_structured_output.py)."""

from __future__ import annotations

import datetime
import json
from typing import Any, Literal

import pytest
from fakes import FakeTI, Imported, import_in_fresh_python
from pydantic import BaseModel

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.structured_output import OutputSpec, OutputValidationError, first_json_object, schema_error


class Label(BaseModel):
    category: Literal["billing", "login", "other"]
    urgency: int
    due: datetime.date


LABEL_SCHEMA = Label.model_json_schema()
GOOD = {"category": "login", "urgency": 2, "due": "2026-03-04"}
BAD = {"category": "pizza", "urgency": "very", "due": "2026-03-04"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def reply(content: str | None = None, args: Any = None, name: str = "final_result") -> tuple[int, dict, bytes]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if args is not None:
        arguments = args if isinstance(args, str) else json.dumps(args)
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": USAGE}
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def sent(scripted, i: int) -> dict:
    return json.loads(scripted.requests[i].body)


@pytest.fixture()
def run(scripted, make_conn):
    def go(*replies, **kwargs) -> tuple[Any, FakeTI]:
        scripted.script(*replies)
        ti = FakeTI()
        kwargs.setdefault("prompt", "Label this ticket")
        operator = AgentChatCompletionOperator(task_id="t", agentchat_conn_id=make_conn("so", scripted.url), **kwargs)
        return operator.execute({"ti": ti}), ti

    return go


# ---------------------------------------------------------------------------------------------- strategies


def test_tool_strategy_forces_the_schema_tool_and_reads_its_arguments(run, scripted):
    value, ti = run(reply(args=GOOD), output_schema=Label, output_strategy="tool")
    assert value == GOOD
    body = sent(scripted, 0)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "final_result",
                "description": body["tools"][0]["function"]["description"],
                "parameters": LABEL_SCHEMA,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "final_result"}}
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert ti.xcom["usage"] == USAGE and ti.xcom["response"]["choices"][0]["message"]["tool_calls"]


def test_json_strategy_sends_an_instruction_and_reads_the_first_object(run, scripted):
    text = f'Here is the label:\n```json\n{json.dumps(GOOD)}\n```\nAnything else? {{"not": "this"}}'
    value, _ = run(reply(text), output_schema=Label, output_strategy="json", system_prompt="Be terse.")
    assert value == GOOD
    body = sent(scripted, 0)
    assert "tools" not in body and "tool_choice" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "system", "user"]  # the user's system prompt first, then the schema instruction
    instruction = body["messages"][1]["content"]
    assert "JSON Schema" in instruction and json.loads(instruction[instruction.index("{") :]) == LABEL_SCHEMA


def test_auto_reads_the_tool_call(run, scripted):
    value, _ = run(reply(args=GOOD), output_schema=Label)
    assert value == GOOD and sent(scripted, 0)["tool_choice"]["function"]["name"] == "final_result"


def test_auto_falls_back_to_json_text_when_the_agent_ignores_the_tool(run, scripted):
    value, _ = run(reply(f"Sure! {json.dumps(GOOD)}"), output_schema=Label)
    assert value == GOOD and len(scripted.requests) == 1


def test_tool_strategy_does_not_take_text_and_asks_for_the_call(run, scripted):
    value, ti = run(reply(json.dumps(GOOD)), reply(args=GOOD), output_schema=Label, output_strategy="tool")
    assert value == GOOD and len(scripted.requests) == 2
    repair = sent(scripted, 1)["messages"]
    assert repair[-2] == {"role": "assistant", "content": json.dumps(GOOD)}
    assert repair[-1]["role"] == "user" and "did not call final_result" in repair[-1]["content"]
    assert "JSON Schema" not in repair[-1]["content"]  # text is never accepted by "tool": ask for the call only
    assert ti.xcom["usage"]["total_tokens"] == 30


def test_auto_repairs_a_prose_answer_by_asking_for_the_call_or_json_with_the_schema(run, scripted):
    value, _ = run(reply("It is probably a login problem."), reply(json.dumps(GOOD)), output_schema=Label)
    assert value == GOOD
    ask = sent(scripted, 1)["messages"][-1]["content"]
    assert "holds no JSON object" in ask and "final_result" in ask
    assert json.loads(ask[ask.index("JSON Schema:") + len("JSON Schema:") :]) == LABEL_SCHEMA


# ---------------------------------------------------------------------------------------------- repair


def test_repair_answers_the_tool_call_with_the_errors_and_succeeds_on_round_two(run, scripted):
    value, ti = run(reply(args=BAD), reply(args=GOOD), output_schema=Label, output_strategy="tool")
    assert value == GOOD
    second = sent(scripted, 1)
    assert second["tools"] == sent(scripted, 0)["tools"] and second["tool_choice"] == sent(scripted, 0)["tool_choice"]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    assert "- category:" in tool["content"] and "- urgency:" in tool["content"]
    assert ti.xcom["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}


def test_repair_in_the_json_strategy_is_a_user_message(run, scripted):
    value, _ = run(reply(json.dumps(BAD)), reply(json.dumps(GOOD)), output_schema=LABEL_SCHEMA, output_strategy="json")
    assert value == GOOD
    last = sent(scripted, 1)["messages"][-1]
    assert last["role"] == "user" and "- category:" in last["content"] and "JSON object" in last["content"]


def test_the_task_fails_after_output_retries_naming_the_path_and_showing_the_answer(run, scripted, canary_key):
    leaked = {**BAD, "note": f"my key is {canary_key} " + "x" * 2000}
    with pytest.raises(OutputValidationError) as info:
        run(reply(args=leaked), reply(args=leaked), reply(args=GOOD), output_schema=Label, output_retries=1)
    assert len(scripted.requests) == 2  # one answer plus one repair round; the third reply is never asked for
    error = info.value
    assert error.rounds == 2 and error.usage["total_tokens"] == 30
    assert [path for path, _ in error.errors] == ["category", "urgency"]
    message = str(error)
    assert "category:" in message and '"category": "pizza"' in message
    assert canary_key not in message and "***" in message
    assert "more characters" in message and len(message) < 1500


def test_output_retries_zero_fails_on_the_first_invalid_answer(run, scripted):
    with pytest.raises(OutputValidationError):
        run(reply(args=BAD), output_schema=Label, output_retries=0)
    assert len(scripted.requests) == 1


def test_arguments_that_are_not_json_are_repaired(run, scripted):
    value, _ = run(reply(args='{"category": "login",'), reply(args=GOOD), output_schema=Label, output_strategy="tool")
    assert value == GOOD
    assert "not valid JSON" in sent(scripted, 1)["messages"][-1]["content"]


# ------------------------------------------------------------------------------ model vs dict, XCom values


@pytest.mark.parametrize("answer", [GOOD, BAD, {"category": "login"}])
def test_a_model_and_its_json_schema_give_the_same_results(answer):
    model, schema = OutputSpec.build(Label), OutputSpec.build(LABEL_SCHEMA)
    message = {"tool_calls": [{"id": "c", "function": {"name": "final_result", "arguments": json.dumps(answer)}}]}
    by_model, by_schema = model.parse(message), schema.parse(message)
    assert by_model.value == by_schema.value
    assert [p for p, _ in by_model.errors] == [p for p, _ in by_schema.errors]


# The compiled validator only ever accepts; jsonschema decides the rest. These values are where JSON Schema's
# rules differ from Python's (True == 1, 1.0 is an integer, bool is not a number), plus ones the compiled
# validator cannot take (an integer beyond 64 bits, NaN).
TRICKY_SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "x": {"type": "number"},
        "flag": {"enum": [1, "one"]},
        "tag": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
        "items": {"type": "array", "uniqueItems": True, "items": {"type": "integer"}},
    },
    "required": ["n"],
    "additionalProperties": False,
}
TRICKY_VALUES = [
    {"n": 1},
    {"n": 1.0},
    {"n": True},
    {"n": -1},
    {"n": 2**70},
    {"n": 1, "x": True},
    {"n": 1, "x": float("nan")},
    {"n": 1, "flag": True},
    {"n": 1, "flag": 1.0},
    {"n": 1, "tag": "abc"},
    {"n": 1, "tag": "ABC"},
    {"n": 1, "tag": "abcdef"},
    {"n": 1, "tag": "\u00e9t\u00e9"},
    {"n": 1, "items": [1, True]},
    {"n": 1, "items": [1, 1.0]},
    {"n": 1, "other": 1},
    {},
]


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=[json.dumps(v)[:40] for v in TRICKY_VALUES])
def test_a_json_schema_dict_decides_exactly_as_jsonschema(value):
    from jsonschema.validators import validator_for

    reference = validator_for(TRICKY_SCHEMA)(TRICKY_SCHEMA)
    checked, errors = OutputSpec.build(TRICKY_SCHEMA).validate(value)
    assert (not errors) == reference.is_valid(value)
    assert errors == sorted(schema_error(e) for e in reference.iter_errors(value))
    if not errors:
        assert checked == value or value["x"] != value["x"]  # NaN is valid and never equal to itself


def test_a_valid_answer_is_accepted_without_jsonschema_and_an_invalid_one_is_worded_by_it(monkeypatch):
    spec = OutputSpec.build(LABEL_SCHEMA)
    assert spec._fast is not None
    calls = []
    real = spec._validator

    class Counting:
        def iter_errors(self, value):
            calls.append(value)
            return real.iter_errors(value)

    monkeypatch.setattr(spec, "_validator", Counting())
    assert spec.validate(GOOD) == (GOOD, [])
    assert calls == []
    _, errors = spec.validate(BAD)
    assert calls == [BAD] and errors


def test_the_value_is_the_models_json_dump(run):
    class Stamped(BaseModel):
        when: datetime.datetime
        tags: frozenset[str]

    value, _ = run(reply(args={"when": "2026-03-04T05:06:07Z", "tags": ["a"]}), output_schema=Stamped)
    assert (
        value
        == Stamped.model_validate(value).model_dump(mode="json")
        == {"when": "2026-03-04T05:06:07Z", "tags": ["a"]}
    )
    json.dumps(value)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"output_schema": {"type": "array", "items": {"type": "string"}}}, "output_schema"),
        ({"output_schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}}, "output_schema"),
        (
            {"output_schema": {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}},
            "output_schema",
        ),
        ({"output_schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}, "output_schema"),
        ({"output_schema": datetime.date}, "output_schema"),
        ({"output_schema": "{not json"}, "output_schema"),
        ({"output_schema": Label, "tools": [{"type": "function", "function": {"name": "final_result"}}]}, "tools[0]"),
        (
            {
                "output_schema": Label,
                "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tool_choice",
        ),
        ({"output_schema": Label, "n": 2}, "n"),
    ],
)
def test_bad_output_arguments_fail_before_any_request(run, scripted, kwargs, field):
    with pytest.raises(InvalidRequestError, match=field.replace("[", r"\[")):
        run(**kwargs)
    assert scripted.requests == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_schema": Label, "output_strategy": "regex"}, "output_strategy"),
        ({"output_schema": Label, "output_retries": -1}, "output_retries"),
        ({"output_schema": Label, "output": "response"}, "leave output at 'text'"),
    ],
)
def test_bad_output_options_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgentChatCompletionOperator(task_id="t", prompt="x", **kwargs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure.\n```json\n{"a": 1}\n```\nDone {"b": 2}', {"a": 1}),
        ('```\n{"a": [1, {"b": "}"}]}\n```', {"a": [1, {"b": "}"}]}),
        ('I think {not json} but {"a": 1} and {"b": 2}', {"a": 1}),
        ('```json\nnot an object\n```\nthen {"a": 1}', {"a": 1}),
        ("no object here", None),
        ("[1, 2]", None),
        (None, None),
    ],
)
def test_first_json_object(text, expected):
    found = first_json_object(text)
    assert (found[0] if found else None) == expected


def test_importing_the_operators_does_not_load_validators():
    """Schemas are built in execute: DAG parsing must not import this module, pydantic models or jsonschema."""
    imported = import_in_fresh_python(
        "import airflow_agentchat.operators.agent_chat, airflow_agentchat.operators.branch\n"
        "import airflow_agentchat.decorators.agent_chat_branch"
    )
    heavy = ("airflow_agentchat.structured_output", "airflow_agentchat.models", "jsonschema", "referencing")
    assert Imported.matching(imported.new, heavy) == []


# ---------------------------------------------------------------------------------------------- batch


@pytest.fixture()
def batch(devserver, make_conn, tmp_path):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    devserver.reset()
    conn = make_conn("so_batch", devserver.url)

    def go(**kwargs) -> tuple[dict, list[dict]]:
        kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
        kwargs.setdefault("max_failed_fraction", 1.0)
        kwargs.setdefault("output_retries", 0)  # invalid answers stay invalid (see test_batch_repair.py)
        operator = AgentChatBatchOperator(task_id="b", agentchat_conn_id=conn, **kwargs)
        summary = operator.execute({"ti": FakeTI()})
        lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        return summary, sorted(lines, key=lambda line: line["context"]["n"])

    return go


PROMPTS = [
    {"prompt": f"Ticket {n}: cannot log in{' [[fault:invalid_output]]' if n % 4 == 0 else ''}", "context": {"n": n}}
    for n in range(12)
]


@pytest.mark.parametrize("strategy", ["tool", "json", "auto"])
def test_batch_lines_carry_the_validated_output_and_invalid_ones_are_counted(batch, devserver, strategy):
    summary, lines = batch(prompts=PROMPTS, output_schema=Label, output_strategy=strategy)
    for line in lines:
        if line["context"]["n"] % 4:
            assert line["status"] == "ok"
            assert Label.model_validate(line["output"]).model_dump(mode="json") == line["output"]
        else:
            assert line["status"] == "error" and "output" not in line
            assert line["error"]["type"] == "invalid_output"
            assert {path for path, _ in line["error"]["errors"]} == {"category", "urgency", "due"}
            assert json.loads(line["raw"])["category"] == "not-one-of-the-allowed-values"
            assert line["usage"]["total_tokens"] > 0  # paid for, so counted
    assert summary["invalid_output"] == summary["failed"] == 3 and summary["succeeded"] == 9
    assert summary["error_types"] == {"invalid_output": 3}
    assert summary["usage"]["total_tokens"] == sum(line["usage"]["total_tokens"] for line in lines)
    assert devserver.stats(timestamps=False)["total"] == 12  # output_retries=0: one request per item


def test_invalid_output_counts_towards_max_failed_fraction(batch):
    from airflow_agentchat.exceptions import AgentChatError

    with pytest.raises(AgentChatError, match="3 of 12 items failed"):
        batch(prompts=PROMPTS, output_schema=LABEL_SCHEMA, max_failed_fraction=0.2)


def test_a_rerun_sends_invalid_output_items_again_only_with_retry_failed(batch, devserver):
    batch(prompts=PROMPTS, output_schema=Label)
    assert devserver.stats(timestamps=False)["total"] == 12
    summary, _ = batch(prompts=PROMPTS, output_schema=Label, retry_failed=False)
    assert summary["sent"] == 0 and devserver.stats(timestamps=False)["total"] == 12
    summary, lines = batch(prompts=PROMPTS, output_schema=Label, retry_failed=True)
    assert summary["sent"] == 3 and devserver.stats(timestamps=False)["total"] == 15
    assert len(lines) == 12 and summary["invalid_output"] == 3


def test_a_batch_refuses_a_bad_schema_before_any_request(batch, devserver):
    with pytest.raises(InvalidRequestError, match="output_schema"):
        batch(prompts=PROMPTS, output_schema={"type": "string"})
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        batch(prompts=PROMPTS, output_schema=Label, tool_choice="none")
    assert devserver.stats(timestamps=False)["total"] == 0


def test_a_batch_checks_shared_fields_with_the_schemas_tool_before_any_request(batch, devserver):
    clash = [{"type": "function", "function": {"name": "final_result"}}]
    with pytest.raises(InvalidRequestError, match=r"tools\[0\]"):
        batch(prompts=PROMPTS, output_schema=Label, tools=clash)
    with pytest.raises(InvalidRequestError, match="n: must be 1"):
        batch(prompts=PROMPTS, output_schema=Label, n=2)
    with pytest.raises(InvalidRequestError, match="temperature"):
        batch(prompts=PROMPTS, output_schema=Label, temperature=7)
    assert devserver.stats(timestamps=False)["total"] == 0


def test_errors_quoting_the_answer_are_redacted_too(run, scripted, canary_key, capfd):
    """jsonschema quotes the offending value in its message: an echoed key must not reach the error or the log."""
    echoed = {**GOOD, "category": f"key {canary_key}"}
    with pytest.raises(OutputValidationError) as info:
        run(reply(args=echoed), reply(args=echoed), output_schema=LABEL_SCHEMA, output_retries=1)
    assert canary_key not in str(info.value) and canary_key not in repr(info.value.errors)
    assert "category" in str(info.value)
    logged = "".join(capfd.readouterr())
    assert canary_key not in logged and "does not match the output schema" in logged


def test_batch_lines_never_hold_an_echoed_key(scripted, make_conn, tmp_path, canary_key):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    scripted.script()
    scripted.default = reply(args={**GOOD, "category": f"key {canary_key}"})
    try:
        summary = AgentChatBatchOperator(
            task_id="b",
            agentchat_conn_id=make_conn("so_batch_key", scripted.url),
            prompts=["one", "two"],
            output_path=f"file://{tmp_path}/out.jsonl",
            output_schema=LABEL_SCHEMA,
            include_response=False,
            max_failed_fraction=1.0,
        ).execute({"ti": FakeTI()})
    finally:
        scripted.default = None
    text = (tmp_path / "out.jsonl").read_text()
    assert summary["invalid_output"] == 2 and "category" in text and "***" in text
    assert canary_key not in text


# ------------------------------------------------------------------------------ the body on the wire

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"temperature": 0.7, "max_tokens": 5, "stop": ["[/INST]"]},
        {"extra_body": {"k": "v", "n2": 1.5}},
        {"tools": [TOOL], "tool_choice": "auto", "metadata": {"a": "b"}},
        {"logprobs": "true", "top_logprobs": 2},
    ],
)
def test_the_encoded_body_is_the_body(params):
    from airflow_agentchat.models import build_request

    request = build_request([{"role": "user", "content": "h\u00e9llo \u2028 \U0001f600"}], model="m", **params)
    assert json.loads(request.to_json()) == request.to_body()
    assert b"\\u" not in request.to_json()  # UTF-8 as is, like the reference clients


def test_a_batchs_output_tool_is_encoded_once_and_never_stale():
    from airflow_agentchat.models import build_request

    build = OutputSpec.build(LABEL_SCHEMA).builder(build_request)
    first = build([{"role": "user", "content": "one"}], model="m", temperature=0.2)
    second = build([{"role": "user", "content": "two"}], model="m", extra_body={"x": 1})
    for request in (first, second):
        body = json.loads(request.to_json())
        assert body == request.to_body()
        assert body["tools"][0]["function"]["parameters"] == LABEL_SCHEMA
        assert body["tool_choice"] == {"type": "function", "function": {"name": "final_result"}}
    from airflow_agentchat.models import _SHARED

    assert first.tools is second.tools and _SHARED[id(first.tools)].held_by(second)  # one encoding for all
    changed = first.model_copy(update={"tools": [*first.tools, first.tools[0].model_copy()], "tool_choice": "auto"})
    assert json.loads(changed.to_json()) == changed.to_body()
    assert len(json.loads(changed.to_json())["tools"]) == 2
