"""Structured output on an endpoint without ``response_format``: schema in, validated value out.

The reference offers two ways to ask for a shape, and this module builds both:

* ``"tool"``: the schema becomes the ``parameters`` of one function tool, and ``tool_choice`` names it; the
  value is that call's ``arguments``;
* ``"json"``: a system message carries the schema and asks for one JSON object; the value is the first JSON
  object in the answer text (a fenced ```json block first);
* ``"auto"`` sends what ``"tool"`` sends but also accepts a JSON object in the text, because agents with
  their own instructions may answer in text despite ``tool_choice``.

The value is validated (pydantic for a model class, a JSON Schema validator for a dict: ``jsonschema_rs``
checks a valid value quickly, and ``jsonschema`` checks what it rejects and words the errors; both are built
and the schema checked in :mod:`airflow_agentchat.json_schema`). When it is invalid,
:meth:`OutputSpec.repair_messages` gives the messages that send the errors back to the agent: a ``tool``
message answering the call (what pydantic-ai does with its output tool) or a ``user`` message after a text
answer. Callers loop: send, :meth:`OutputSpec.parse`, repair, up to ``retries`` times.

Pure: no I/O; pydantic and jsonschema are touched only when a spec is built. The operators import this
module inside ``execute`` so DAG parsing never pays for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_agentchat import arguments
from airflow_agentchat.exceptions import AgentChatError
from airflow_agentchat.json_schema import (
    check_object_at_top,
    fast_validator,
    field_error,
    json_path,
    json_schema_validator,
    schema_error,
)
from airflow_agentchat.redaction import redact

if TYPE_CHECKING:
    from pydantic import BaseModel

STRATEGIES: tuple[str, ...] = arguments.OUTPUT_STRATEGIES
#: Name of the function tool that carries the schema (pydantic-ai uses the same default).
DEFAULT_TOOL_NAME = "final_result"
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_MAX_RAW = 500
_decoder = json.JSONDecoder()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class OutputValidationError(AgentChatError, kind="invalid_output"):
    """The agent's answer still did not match the output schema after every repair round.

    ``errors`` holds ``(path, message)`` pairs of the last answer, ``raw`` what the agent answered (cut and
    with the access key redacted), ``rounds`` how many answers were checked, ``usage`` the tokens of all of them.
    """

    def __init__(
        self, errors: list[tuple[str, str]], raw: str | None, rounds: int, usage: dict[str, Any] | None = None
    ) -> None:
        self.errors = errors
        self.raw = raw
        self.rounds = rounds
        self.usage = usage or {}
        shown = "; ".join(f"{path}: {msg}" for path, msg in errors[:10])
        super().__init__(
            f"The agent's answer does not match the output schema after {rounds} round(s): {shown}. It answered: {raw}"
        )

    def to_dict(self) -> dict[str, Any]:
        errors = [list(pair) for pair in self.errors]
        return {**super().to_dict(), "errors": errors, "raw": self.raw, "rounds": self.rounds, "usage": self.usage}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        errors = [(str(path), str(message)) for path, message in data.get("errors") or []]
        return cls(errors, data.get("raw"), int(data.get("rounds") or 0), data.get("usage"))


def first_json_object(text: str | None) -> tuple[Any, str] | None:
    """The first JSON object in ``text`` and its source text: fenced blocks first, then the first ``{...}``.

    Models wrap JSON in ```json fences, lead with a sentence, or trail with one; all of that is skipped.
    Returns None when the text holds no complete JSON object.
    """
    if not text:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)] if "```" in text else []
    candidates.append(text)
    for candidate in candidates:
        start = candidate.find("{")
        while start >= 0:
            try:
                value, end = _decoder.raw_decode(candidate, start)
            except ValueError:
                start = candidate.find("{", start + 1)
                continue
            return value, candidate[start:end]
    return None


@dataclass
class Outcome:
    """What one answer gave: the validated value, or the errors and what the agent said."""

    value: Any = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    raw: str | None = None  # the arguments or text the value came from (or the whole answer when none)
    source: str | None = None  # "tool" or "text"

    @property
    def ok(self) -> bool:
        return not self.errors

    def redacted(self, secret: str | None) -> Outcome:
        """A copy safe to log, raise or store: the key removed from the answer and from every error message.

        jsonschema quotes the offending value in its messages, so an agent echoing the key would leak it.
        """
        errors = [(redact(path, secret), truncate(redact(msg, secret), 300)) for path, msg in self.errors]
        raw = redact(self.raw, secret) if self.raw else self.raw
        return Outcome(value=self.value, errors=errors, raw=raw, source=self.source)

    def describe(self, limit: int = 10) -> str:
        """``path: message; path: message`` (the first ``limit`` errors)."""
        shown = "; ".join(f"{path}: {msg}" for path, msg in self.errors[:limit])
        more = len(self.errors) - limit
        return shown + (f"; and {more} more" if more > 0 else "")


class OutputSpec:
    """One output schema, checked once, then used for every request and answer of a task.

    Build it with :meth:`build`, which raises ``InvalidRequestError`` naming ``output_schema``,
    ``output_strategy`` or ``output_retries`` for a bad argument, before anything is sent.
    """

    def __init__(
        self,
        schema: dict[str, Any],
        *,
        model: type[BaseModel] | None,
        strategy: str,
        retries: int,
        name: str,
        description: str,
        validator: Any,
    ) -> None:
        self.schema = schema
        self.model = model
        self.strategy = strategy
        self.retries = retries
        self.name = name
        self.description = description
        self._validator = validator
        self._fast = fast_validator(schema) if model is None else None
        self.tool = {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}
        self.tool_choice = {"type": "function", "function": {"name": name}}
        self.instruction = (
            "Reply with exactly one JSON object and nothing else. The object must be valid against this "
            f"JSON Schema:\n{_dumps(schema)}"
        )

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        output_schema: Any,
        *,
        strategy: str = "auto",
        retries: int = 2,
        name: str = DEFAULT_TOOL_NAME,
        description: str | None = None,
    ) -> OutputSpec:
        """Check the arguments and prepare the validator (pydantic model class or JSON Schema dict)."""
        for field_name, problem in (
            ("output_strategy", arguments.output_strategy(strategy)),
            ("output_retries", arguments.output_retries(retries)),
        ):
            if problem is not None:
                raise field_error(field_name, problem)
        if isinstance(output_schema, str):
            try:
                output_schema = json.loads(output_schema)
            except json.JSONDecodeError as exc:
                raise field_error("output_schema", f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        model: type[BaseModel] | None = None
        if isinstance(output_schema, type):
            from pydantic import BaseModel

            if not issubclass(output_schema, BaseModel):
                raise field_error(
                    "output_schema",
                    f"{output_schema.__name__} is not a pydantic model; give a BaseModel subclass or a JSON "
                    "Schema dict",
                )
            model = output_schema
            schema = model.model_json_schema()
            validator: Any = model
        elif isinstance(output_schema, Mapping):
            schema = json.loads(json.dumps(output_schema))  # a private, JSON-only copy
            validator = json_schema_validator(schema)
        else:
            raise field_error(
                "output_schema",
                f"must be a pydantic model class or a JSON Schema dict, not {type(output_schema).__name__}",
            )
        check_object_at_top(schema)
        text = description or schema.get("description") or "Give the final answer as the arguments of this call."
        return cls(
            schema,
            model=model,
            strategy=strategy,
            retries=retries,
            name=name,
            description=str(text)[:1024],
            validator=validator,
        )

    # ------------------------------------------------------------------------------------------ requests

    def apply(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The request with the schema added: the tool and ``tool_choice``, or the instruction message."""
        if params.get("tool_choice") is not None:
            rule = "cannot be set together with output_schema: the output strategy chooses it"
            raise field_error("tool_choice", rule)
        if (problem := arguments.single_answer(params.get("n"), "output_schema (one answer is validated)")) is not None:
            raise field_error("n", problem)
        tools = list(params.get("tools") or [])
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and function.get("name") == self.name:
                raise field_error(f"tools[{i}]", f"a tool named {self.name!r} clashes with the output schema's tool")
        params = dict(params)
        if self.strategy == "json":
            at = 0
            while at < len(messages) and messages[at].get("role") in ("system", "developer"):
                at += 1
            messages = [*messages[:at], {"role": "system", "content": self.instruction}, *messages[at:]]
        else:
            params["tools"] = [*tools, self.tool]
            params["tool_choice"] = self.tool_choice
        return messages, params

    def builder(self, build_request: Callable[..., Any]) -> Callable[..., Any]:
        """``build_request`` for many items (the batch): the schema is added to each, checked once.

        With the tool strategies the tool and ``tool_choice`` are the same for every item, so they are
        validated and encoded once and attached to each item's validated request, instead of walking and
        encoding the whole schema again per item. Items with tools or ``tool_choice`` of their own take the
        full path.
        """

        def full(messages: list[dict[str, Any]], **params: Any) -> Any:
            messages, params = self.apply(messages, params)
            return build_request(messages, **params)

        if self.strategy == "json":
            return full
        from airflow_agentchat.models import SharedFields, build_fields

        shared = SharedFields(build_fields(**self.apply([], {})[1]), ("tools", "tool_choice"))

        def fast(messages: list[dict[str, Any]], **params: Any) -> Any:
            if params.get("tools") or params.get("tool_choice") is not None or (params.get("n") or 1) != 1:
                return full(messages, **params)
            return shared.attach(build_request(messages, **params))

        return fast

    # ------------------------------------------------------------------------------------------ answers

    def parse(self, message: Mapping[str, Any] | None) -> Outcome:
        """Extract the value from an assistant message (response form) and validate it."""
        message = message or {}
        text = message.get("content")
        if self.strategy != "json":
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                if function.get("name") == self.name:
                    arguments = function.get("arguments") or ""
                    if self.model is not None and (dumped := _model_value(self.model, arguments)) is not None:
                        return Outcome(value=dumped, raw=arguments, source="tool")
                    try:
                        value = json.loads(arguments) if arguments.strip() else {}
                    except ValueError as exc:
                        return Outcome(
                            errors=[("(root)", f"arguments are not valid JSON: {exc}")], raw=arguments, source="tool"
                        )
                    return self._validated(value, arguments, "tool")
            if self.strategy == "tool":
                called = [(c.get("function") or {}).get("name") for c in message.get("tool_calls") or ()]
                why = f"called {', '.join(map(str, called))} instead" if called else "answered in text"
                return Outcome(
                    errors=[("(root)", f"the agent did not call {self.name} ({why})")], raw=text, source=None
                )
        found = first_json_object(text)
        if found is None:
            return Outcome(errors=[("(root)", "the answer holds no JSON object")], raw=text, source="text")
        value, raw = found
        return self._validated(value, raw, "text")

    def failure(
        self, outcome: Outcome, rounds: int, usage: dict[str, Any], secret: str | None
    ) -> OutputValidationError:
        """The error a task fails with when the last round was still invalid."""
        safe = outcome.redacted(secret)
        return OutputValidationError(safe.errors, truncate(safe.raw), rounds, usage)

    def validate(self, value: Any) -> tuple[Any, list[tuple[str, str]]]:
        """``(JSON-compatible value, [])`` when valid, else ``(None, [(path, message), ...])``."""
        if self.model is not None:
            from pydantic import ValidationError

            try:
                instance = self.model.model_validate(value)
            except ValidationError as exc:
                details = exc.errors(include_url=False, include_input=False, include_context=False)
                return None, sorted((json_path(e["loc"]), e["msg"]) for e in details)
            return instance.model_dump(mode="json"), []
        if self._accepts_fast(value):
            return value, []
        errors = sorted(schema_error(e) for e in self._validator.iter_errors(value))  # by path, as for a model
        return (None, errors) if errors else (value, [])

    def _accepts_fast(self, value: Any) -> bool:
        """True when the compiled (Rust) validator finds ``value`` valid: ~0.3 µs against ~20 µs for jsonschema.

        Only an acceptance is taken from it; anything it rejects (or cannot take, like an integer beyond 64
        bits) goes to jsonschema, which has the last word and writes the messages.
        """
        if self._fast is None:
            return False
        try:
            return bool(self._fast.is_valid(value))
        except Exception:
            return False

    def _validated(self, value: Any, raw: str, source: str) -> Outcome:
        checked, errors = self.validate(value)
        return Outcome(value=checked, errors=errors, raw=raw, source=source)

    def repair_messages(self, message: Mapping[str, Any], outcome: Outcome) -> list[dict[str, Any]]:
        """What to append to the conversation so the agent can fix its answer: its message, then the errors."""
        errors = "\n".join(f"- {path}: {msg}" for path, msg in outcome.errors[:20])
        calls = [c for c in message.get("tool_calls") or () if isinstance(c, Mapping)]
        assistant: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if calls:
            assistant["tool_calls"] = [
                {
                    "id": c.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name") or "",
                        "arguments": (c.get("function") or {}).get("arguments") or "",
                    },
                }
                for i, c in enumerate(calls)
            ]
            replies = []
            for call in assistant["tool_calls"]:
                if call["function"]["name"] == self.name and outcome.source == "tool":
                    content = (
                        f"Validation failed:\n{errors}\nCall {self.name} again with arguments that fix these errors."
                    )
                else:
                    content = f"Not run: give the final answer by calling {self.name}."
                replies.append({"role": "tool", "tool_call_id": call["id"], "content": content})
            return [assistant, *replies]
        if assistant["content"] is None:
            assistant["content"] = ""
        if self.strategy == "json":
            ask = "Reply again with only one JSON object that fixes these errors."
        elif self.strategy == "tool":
            ask = f"Give the answer by calling {self.name}."
        else:
            ask = (
                f"Give the answer by calling {self.name}, or reply with only one JSON object valid against this "
                f"JSON Schema:\n{_dumps(self.schema)}"
            )
        return [assistant, {"role": "user", "content": f"Your answer is not valid:\n{errors}\n{ask}"}]


def message_of(completion: Any) -> dict[str, Any]:
    """The first choice's assistant message of a ``ChatCompletion`` as the dict :meth:`OutputSpec.parse` reads.

    Built from attributes, not ``model_dump``: the batch calls this once per answer.
    """
    message = completion.choices[0].message if completion.choices else None
    if message is None:
        return {}
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls
        ]
    return out


def repair_request(spec: OutputSpec, request: Any, message: Mapping[str, Any], outcome: Outcome) -> Any:
    """The next repair round of a built request (the batch's per-item loop): its conversation plus
    :meth:`OutputSpec.repair_messages`, every other field (the schema's tool included) kept as it is.

    The single operator's loop (``operators/conversation.py``) appends the same messages to its own list.
    """
    from airflow_agentchat.models import ChatMessage

    added = [ChatMessage.model_validate(m) for m in spec.repair_messages(message, outcome)]
    return request.model_copy(update={"messages": [*request.messages, *added]})


def result_fields(
    outcome: Outcome, secret: str | None = None, rounds: int = 1
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a batch result line gets for its last answer (``outcome``, :meth:`OutputSpec.parse` of it):
    ``({"output": value}, None)``, or ``({"raw": answer}, error)`` with the ``invalid_output`` error.

    The error keeps the paths and messages, what the agent answered (``raw``, the key redacted) and how many
    answers were checked (``rounds``, as on :class:`OutputValidationError`), so an invalid row can be
    inspected, and it is sent again on a rerun with ``retry_failed``.
    """
    if outcome.ok:
        return {"output": outcome.value}, None
    outcome = outcome.redacted(secret)
    error = {
        "type": OutputValidationError.kind,
        "message": f"the answer does not match the output schema after {rounds} round(s): {outcome.describe(5)}",
        "errors": [list(pair) for pair in outcome.errors],
        "rounds": rounds,
    }
    return {"raw": outcome.raw}, error


def _model_value(model: type[BaseModel], arguments: str) -> dict[str, Any] | None:
    """The model's JSON dump of valid ``arguments``, parsed and validated by pydantic-core in one step (cheaper
    than ``json.loads`` then ``model_validate``, see ``benchmarks/RESULTS.md``); None when they are not valid,
    and the step-by-step path then words the errors."""
    from pydantic import ValidationError

    try:
        instance = model.__pydantic_validator__.validate_json(arguments)
    except ValidationError:
        return None
    dumped: dict[str, Any] = model.__pydantic_serializer__.to_python(instance, mode="json")
    return dumped


def truncate(text: str | None, limit: int = _MAX_RAW) -> str:
    """What the agent answered, cut for an error message or a log line."""
    if text is None:
        return "(no text)"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"
