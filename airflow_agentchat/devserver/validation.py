"""Request validation for the dev server: the constraints of the wire contract (DESIGN.md).

The dev server should reject what a real agent endpoint rejects, so clients meet their 400s offline.
:func:`validate_request` prefers the project's pydantic model ``airflow_agentchat.models.ChatCompletionRequest``
when it is importable and falls back to the hand-written checks below (kept small and fast, and used while
the model does not exist). Either way the result is ``None`` (valid) or ``(message, param)``.
The built-in checks also serve as an independent cross-check of the model in tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ROLES = frozenset({"developer", "system", "user", "assistant", "tool"})
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ASSISTANT_ONLY = ("tool_calls", "refusal", "reasoning_content")

Problem = tuple[str, str | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool = False) -> Problem | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if not (_is_int(value) if integer else _is_number(value)):
        return f"'{name}' must be {'an integer' if integer else 'a number'}", name
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
        return f"'{name}' must be {bound}, got {value}", name
    return None


def _check_messages(messages: Any) -> Problem | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array", "messages"
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return f"'{where}' must be an object", where
        role = message.get("role")
        if role not in ROLES:
            return f"'{where}.role' must be one of {sorted(ROLES)}, got {role!r}", f"{where}.role"
        content = message.get("content")
        if content is None:
            if role != "assistant":
                return f"'{where}.content' is required for role {role!r}", f"{where}.content"
        elif not isinstance(content, str):
            return f"'{where}.content' must be a string", f"{where}.content"
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            return f"'{where}.tool_call_id' is required on tool messages", f"{where}.tool_call_id"
        if role != "tool" and message.get("tool_call_id") is not None:
            return f"'{where}.tool_call_id' is only allowed on tool messages", f"{where}.tool_call_id"
        for key in _ASSISTANT_ONLY:
            if role != "assistant" and message.get(key) is not None:
                return f"'{where}.{key}' is only allowed on assistant messages", f"{where}.{key}"
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                return f"'{where}.tool_calls' must be an array", f"{where}.tool_calls"
            for j, call in enumerate(calls):
                cw = f"{where}.tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(call, dict)
                    or not isinstance(call.get("id"), str)
                    or call.get("type") != "function"
                    or not isinstance(fn, dict)
                    or not isinstance(fn.get("name"), str)
                    or not isinstance(fn.get("arguments"), str)
                ):
                    return f"'{cw}' needs id, type 'function' and function.name/arguments strings", cw
    return None


def _check_tools(body: dict[str, Any]) -> Problem | None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "'tools' must be an array", "tools"
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                return f"'{where}.type' must be 'function'", f"{where}.type"
            fn = tool.get("function")
            if not isinstance(fn, dict):
                return f"'{where}.function' is required", f"{where}.function"
            name = fn.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                return f"'{where}.function.name' must match ^[A-Za-z0-9_-]{{1,64}}$", f"{where}.function.name"
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                return f"'{where}.function.parameters' must be an object", f"{where}.function.parameters"
            names.add(name)
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if name in names:
            return None
        return f"'tool_choice' names function {name!r}, which is not in 'tools'", "tool_choice"
    return "'tool_choice' must be 'none', 'auto', 'required' or a named function", "tool_choice"


def _check_misc(body: dict[str, Any]) -> Problem | None:
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not 1 <= len(stop) <= 4 or not all(isinstance(s, str) for s in stop):
            return "'stop' must be a string or an array of 1 to 4 strings", "stop"
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            return "'logit_bias' must be an object", "logit_bias"
        for key, value in bias.items():
            if not str(key).isdigit():
                return f"'logit_bias' keys must be token ids, got {key!r}", "logit_bias"
            if not _is_number(value) or not -100 <= value <= 100:
                return "'logit_bias' values must be between -100 and 100", "logit_bias"
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        return "'logprobs' must be a boolean", "logprobs"
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        return "'top_logprobs' requires 'logprobs' to be true", "top_logprobs"
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        return f"'reasoning_effort' must be one of {sorted(REASONING_EFFORTS)}", "reasoning_effort"
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            return "'metadata' must be an object with at most 16 pairs", "metadata"
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                return "'metadata' keys must be ≤ 64 chars and values strings ≤ 512 chars", "metadata"
    for flag in (
        "stream",
        "include_retrieval_info",
        "include_functions_info",
        "include_guardrails_info",
        "provide_citations",
    ):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            return f"'{flag}' must be a boolean", flag
    options = body.get("stream_options")
    if options is not None:
        if body.get("stream") is not True:
            return "'stream_options' is only allowed when 'stream' is true", "stream_options"
        if not isinstance(options, dict):
            return "'stream_options' must be an object", "stream_options"
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return "'model' must be a string", "model"
    return None


def validate_builtin(body: Any) -> Problem | None:
    """Hand-written checks of every request constraint in DESIGN.md; None when the body is valid."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object", None
    problem = _check_messages(body.get("messages"))
    if problem:
        return problem
    for name, lo, hi, integer in (
        ("temperature", 0, 2, False),
        ("top_p", 0, 1, False),
        ("frequency_penalty", -2, 2, False),
        ("presence_penalty", -2, 2, False),
        ("n", 1, 128, True),
        ("max_completion_tokens", 256, None, True),
        ("max_tokens", 1, None, True),
        ("top_logprobs", 0, 20, True),
        ("seed", -(2**63), 2**63 - 1, True),
    ):
        problem = _range(body, name, lo, hi, integer)
        if problem:
            return problem
    return _check_tools(body) or _check_misc(body)


def _model_validator() -> Callable[[Any], Problem | None] | None:
    """A validator built on ``airflow_agentchat.models.ChatCompletionRequest``, if that model exists.

    The model is the client's strict view (it forbids unknown keys); a server has to accept extra top-level
    keys that clients pass through ``extra_body``, so only the fields the model names are validated.
    """
    try:
        from pydantic import ValidationError

        from airflow_agentchat.models import ChatCompletionRequest, invalid_request_from
    except ImportError:
        return None
    known = set(ChatCompletionRequest.model_fields) - {"extra_body"}

    def validate(body: Any) -> Problem | None:
        if not isinstance(body, dict):
            return "the request body must be a JSON object", None
        try:
            ChatCompletionRequest.model_validate({k: v for k, v in body.items() if k in known})
        except ValidationError as exc:
            errors = invalid_request_from(exc).errors
            message = "; ".join(f"{field}: {rule}" for field, rule in errors)
            param = errors[0][0] if errors and errors[0][0] != "request" else None
            return f"Invalid chat completion request: {message}", param
        return None

    return validate


def make_validator() -> Callable[[Any], Problem | None]:
    """The request validator the app uses: the project's model when importable, else the built-in one."""
    return _model_validator() or validate_builtin
