"""Python callables as agent tools: a schema from the signature, validated calls, JSON results, a trace.

A plain function with type hints and a docstring becomes a function tool:

* its ``parameters`` are the JSON Schema pydantic makes of its signature (a model built from the parameters,
  extra arguments forbidden), its ``description`` the docstring's text before the parameter section, and
  each parameter's description comes from ``:param name:`` lines or a Google-style ``Args:`` section;
* a call's ``arguments`` are parsed and validated by that model; invalid ones are answered with the errors
  (the agent can fix them), never passed to the function;
* what the function returns is sent back as JSON text (a ``str`` as it is); a value JSON cannot hold fails
  the task with :class:`ToolError`, naming the tool and the type;
* an exception in the function is sent back as the tool's result (``tool_errors="return"``) or fails the
  task (``"raise"``).

:class:`Toolbox` answers every call of one assistant message and returns the ``tool`` messages and the trace
entries. Pure apart from calling the user's functions: no network, no Airflow. pydantic is imported when a
toolbox is built, which the operators do in ``execute`` so DAG parsing never pays for it.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_agentchat.arguments import tool_name
from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError
from airflow_agentchat.redaction import redact

#: How much of a result or of arguments a trace entry keeps.
TRACE_LIMIT = 1000
_SECTION = re.compile(r"^\s*(:param\b|:arg\b|Args:|Arguments:|Parameters\b|Returns?:|:returns?:|Raises:)")


class ToolError(AgentChatError, kind="tool_error"):
    """A Python tool could not be used: it raised with ``tool_errors="raise"``, returned what JSON cannot
    hold, or the agent kept calling tools past ``max_tool_rounds``.

    ``tool`` names the tool (None for the round limit), ``round`` the tool round it happened in.
    """

    def __init__(self, message: str, *, tool: str | None = None, round: int | None = None) -> None:
        self.tool = tool
        self.round = round
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "tool": self.tool, "round": self.round}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(str(data.get("message") or ""), tool=data.get("tool"), round=data.get("round"))


# ---------------------------------------------------------------------------------------------- docstrings


def _docstring_parts(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """``(description, {param: description})`` from reST ``:param x:`` lines or a Google ``Args:`` section."""
    doc = inspect.getdoc(func) or ""
    lines = doc.splitlines()
    cut = next((i for i, line in enumerate(lines) if _SECTION.match(line)), len(lines))
    description = "\n".join(lines[:cut]).strip()
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines[cut:]:
        stripped = line.strip()
        rest = re.match(r"^:(?:param|arg)\s+(?:[^:]*\s)?(\w+):\s*(.*)$", stripped)
        if rest:
            current, in_args = rest.group(1), False
            params[current] = rest.group(2)
            continue
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            current, in_args = None, True
            continue
        if _SECTION.match(line) or (stripped.endswith(":") and not line.startswith(" ")):
            current, in_args = None, False
            continue
        google = re.match(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped) if in_args else None
        if google and line.startswith((" ", "\t")) and len(line) - len(line.lstrip()) <= 4:
            current = google.group(1)
            params[current] = google.group(2)
        elif current and stripped:
            params[current] = f"{params[current]} {stripped}".strip()
    return description, {k: v for k, v in params.items() if v}


def _strip_titles(schema: Any) -> Any:
    """pydantic titles every model and property ("Order Id"); agents do not need them."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
            else:
                out[key] = _strip_titles(value)
        return out
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


# ---------------------------------------------------------------------------------------------- one tool


@dataclass
class PythonTool:
    """One callable, its function tool definition and the model that validates its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    model: Any

    @classmethod
    def from_callable(cls, func: Callable[..., Any]) -> PythonTool:
        """Build the tool; raises ``InvalidRequestError`` naming the tool when the signature cannot be one."""
        from typing import get_type_hints

        from pydantic import ConfigDict, Field, PydanticUserError, create_model

        name = tool_name(func)
        where = f"tools.{name}"
        try:
            signature = inspect.signature(func)
            hints = get_type_hints(func, include_extras=True)
        except (TypeError, ValueError, NameError) as exc:
            raise InvalidRequestError([(where, f"cannot read its signature: {exc}")]) from None
        description, param_docs = _docstring_parts(func)
        fields: dict[str, Any] = {}
        for pname, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                star = "*" if param.kind is param.VAR_POSITIONAL else "**"
                problem = f"{star}{pname}: *args / **kwargs cannot be described to the agent; name every parameter"
                raise InvalidRequestError([(where, problem)])
            if param.kind is param.POSITIONAL_ONLY:
                raise InvalidRequestError([(where, f"positional-only parameter {pname!r}: make it a normal one")])
            annotation = hints.get(pname, Any)
            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, Field(default, description=param_docs.get(pname)))
        try:
            model = create_model(
                f"{name}_arguments",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
                **fields,
            )
            schema = _strip_titles(model.model_json_schema())
        except (PydanticUserError, TypeError, ValueError) as exc:
            raise InvalidRequestError([(where, f"its parameters cannot be described as JSON Schema: {exc}")]) from None
        schema.pop("additionalProperties", None)
        schema.setdefault("properties", {})
        if not description:
            description = f"Call the Python function {name}."
        return cls(name=name, description=description[:1024], parameters=schema, func=func, model=model)

    @property
    def definition(self) -> dict[str, Any]:
        """The tool as the request's ``tools[]`` carries it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """``(keyword arguments, None)``, or ``(None, what is wrong)`` to send back to the agent."""
        from pydantic import ValidationError

        from airflow_agentchat.structured_output import json_path

        text = arguments or ""
        try:
            raw = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            return None, f"the arguments are not valid JSON ({exc})"
        if not isinstance(raw, dict):
            return None, f"the arguments must be a JSON object, got {type(raw).__name__}"
        try:
            instance = self.model.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            return None, "; ".join(f"{json_path(e['loc'])}: {e['msg']}" for e in errors[:20])
        return {field: getattr(instance, field) for field in type(instance).model_fields}, None


def serialize_result(value: Any, tool: str) -> str:
    """The text of a ``tool`` message: a ``str`` as it is, anything else as JSON.

    pydantic's serializer covers models, dataclasses, dates, decimals, enums, sets and UUIDs; what it cannot
    hold raises :class:`ToolError` naming the tool and the type, instead of sending ``repr`` to the agent.
    """
    if isinstance(value, str):
        return value
    from pydantic_core import PydanticSerializationError, to_json

    try:
        return to_json(value).decode()
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise ToolError(
            f"Tool {tool} returned a {type(value).__name__}, which cannot be sent to the agent as JSON ({exc}); "
            "return a str, number, bool, None, list, dict, dataclass or pydantic model",
            tool=tool,
        ) from None


def _cut(text: str, limit: int = TRACE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


# ---------------------------------------------------------------------------------------------- toolbox


@dataclass
class CallResult:
    """One answered call: the ``tool`` message and its trace entry."""

    message: dict[str, Any]
    trace: dict[str, Any]


class Toolbox:
    """The Python tools of one task, and the names of its other (dict) tools, which the DAG answers itself.

    :param tool_errors: ``"return"`` sends a tool's exception to the agent as its result; ``"raise"`` fails.
    :param secret: the access key, removed from trace entries and log text (an agent may echo it).
    """

    def __init__(
        self,
        functions: Sequence[Callable[..., Any]],
        *,
        other_names: Sequence[str] = (),
        tool_errors: str = "return",
        secret: str | None = None,
    ) -> None:
        self.tools: dict[str, PythonTool] = {}
        for func in functions:
            tool = PythonTool.from_callable(func)
            if tool.name in self.tools or tool.name in other_names:
                raise InvalidRequestError([(f"tools.{tool.name}", "two tools have this name")])
            self.tools[tool.name] = tool
        self.other_names = set(other_names)
        self.tool_errors = tool_errors
        self.secret = secret

    @property
    def definitions(self) -> list[dict[str, Any]]:
        return [tool.definition for tool in self.tools.values()]

    def calls_to_run(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The message's tool calls when this toolbox answers them, else ``[]``.

        A message that calls one of the DAG's own dict tools ends the loop: the task returns it (with
        ``output="message"``) for the DAG to answer, as without Python tools.
        """
        calls = [c for c in message.get("tool_calls") or () if isinstance(c, Mapping)]
        names = {(c.get("function") or {}).get("name") for c in calls}
        if not calls or names & self.other_names:
            return []
        out = []
        for i, call in enumerate(calls):
            function = call.get("function") or {}
            out.append(
                {
                    "id": call.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
                }
            )
        return out

    def answer(self, call: Mapping[str, Any], round_no: int, note: str | None = None) -> CallResult:
        """Run one call (validated) and build its ``tool`` message and trace entry.

        ``note``, when given, is the reply for a call that is not run (the output schema's tool).
        """
        name = call["function"]["name"]
        arguments = call["function"]["arguments"]
        started = time.perf_counter()
        error: str | None = None
        tool = self.tools.get(name)
        if note is not None:
            content = note
            error = "not run"
        elif tool is None:
            content = f"Error: there is no tool named {name!r}; the tools are: {', '.join(sorted(self.tools))}."
            error = "unknown tool"
        else:
            kwargs, problem = tool.validate(arguments)
            if problem is not None or kwargs is None:
                content = f"Error: invalid arguments for {name}: {problem}. Call it again with valid arguments."
                error = "invalid arguments"
            else:
                try:
                    result = tool.func(**kwargs)
                    if inspect.isawaitable(result):
                        import asyncio

                        result = asyncio.run(_await(result))
                except Exception as exc:
                    if self.tool_errors == "raise":
                        raise ToolError(
                            f"Tool {name} raised {type(exc).__name__}: {redact(str(exc), self.secret)} "
                            f"(round {round_no}; tool_errors='raise')",
                            tool=name,
                            round=round_no,
                        ) from exc
                    content = f"Error: {name} raised {type(exc).__name__}: {exc}"
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    content = serialize_result(result, name)
        seconds = round(time.perf_counter() - started, 4)
        trace = {
            "round": round_no,
            "call_id": call["id"],
            "name": name,
            "arguments": self._traced_arguments(arguments),
            "result": redact(_cut(content), self.secret),
            "error": redact(_cut(error, 300), self.secret) if error else None,
            "seconds": seconds,
        }
        return CallResult({"role": "tool", "tool_call_id": call["id"], "content": content}, trace)

    def _traced_arguments(self, arguments: str) -> Any:
        safe = redact(arguments or "", self.secret)
        try:
            value = json.loads(safe) if safe.strip() else {}
        except ValueError:
            return _cut(safe)
        return value if len(safe) <= TRACE_LIMIT else _cut(safe)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def assistant_message(message: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The assistant's message as the next request carries it (content and the calls being answered)."""
    return {"role": "assistant", "content": message.get("content"), "tool_calls": [dict(c) for c in calls]}


def describe_call(entry: Mapping[str, Any], limit: int = 200) -> str:
    """One log line's worth of a trace entry: ``name(args) -> result (0.01 s)``."""
    args = entry["arguments"]
    args_text = json.dumps(args, ensure_ascii=False) if not isinstance(args, str) else args
    outcome = f"error: {entry['error']}" if entry.get("error") else _cut(entry["result"], limit)
    return f"{entry['name']}({_cut(args_text, limit)}) -> {outcome} ({entry['seconds']} s)"
