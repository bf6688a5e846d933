"""Deterministic "model": turns a chat request into completion choices.

Nothing here is random, so tests and demos can predict every byte of an answer.

The answer rule
---------------
* The *prompt* is the content of the last ``user`` message, with dev-server markers (``[[...]]``) removed
  and surrounding whitespace stripped (empty string if there is no user message).
  Content parts count by their text parts (strings in a part list included).
* Choice ``0`` answers ``"Echo: <prompt>"``; choice ``i > 0`` answers ``"Echo <i>: <prompt>"`` (trailing
  whitespace removed, so an empty prompt gives ``"Echo:"``). When the last user message carries image or video
  parts, the echo ends with how many came: ``"Echo: describe [2 images]"``, ``"[1 image, 1 video]"``.
* ``[[fault:content_filter]]`` (see :mod:`.faults` for ``times=N``): the answer stops after its first token
  with finish_reason ``content_filter``, as an agent platform's content filter ends one.
* If the conversation ends with one or more ``tool`` messages, the answer uses their results instead:
  ``"Tool results: <name>=<content>; <name>=<content>"`` (``name`` is the function named by the matching
  assistant tool call, else the ``tool_call_id``); choices ``i > 0`` get the prefix ``"Tool results <i>: "``.
* Tokens: the text split by the regex ``\\s*\\S+|\\s+`` (a word with its leading whitespace; trailing
  whitespace is a token of its own), so joining the tokens gives the text back. Roughly "one token per word".
* ``stop``: the answer is cut before the earliest occurrence of any stop sequence (finish_reason ``stop``).
* ``max_tokens`` / ``max_completion_tokens`` (the smaller one): the answer keeps that many tokens and
  finish_reason becomes ``length``.
* Tool calls: when ``tools`` are given, ``tool_choice`` is not ``"none"`` and the last message is not a
  ``tool`` message, every choice calls one function (``auto``/``required``: the first tool; a named choice: that
  one) with arguments generated from its JSON schema (see :func:`example_for_schema`); finish_reason
  ``tool_calls``. A named ``tool_choice`` forces the call even after ``tool`` messages (a model obeying it
  does the same), which is what an output-schema repair round relies on. The call id is
  ``call_<sha1(name, prompt, index)[:24]>``. Enum values are picked by a hash of the prompt and the property
  name, so different prompts get different (but always the same) values.
* JSON instructions: without a tool call, when a ``system`` / ``developer`` message says ``JSON Schema``
  followed by a JSON object (the schema), the answer is a JSON object valid for that schema (same rules).
* ``[[fault:invalid_output]]`` in a user message makes the answer to it invalid for the schema (tool
  arguments or JSON text with wrong types, see :func:`invalid_for_schema`); the next answer of the same
  conversation (after an assistant message) is valid again. ``[[fault:invalid_output:times=N]]`` keeps the
  first N answers invalid.
* Usage: ``prompt_tokens`` = sum over messages of (tokens in the content's text + 1); ``completion_tokens`` = tokens of
  every choice's text (tool calls: tokens of their ``arguments`` string); ``total_tokens`` = the sum.
* Logprobs: each token gets ``logprob = -(crc32(token) % 1000) / 1000``; ``top_logprobs`` lists the token
  itself first, then ``<token>~1``, ``<token>~2``, ... each 1.0 lower.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

_TOKEN_RE = re.compile(r"\s*\S+|\s+")
MARKER_RE = re.compile(r"\[\[[^\[\]]*\]\]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens whose concatenation is ``text`` (see the module docstring)."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str | None) -> int:
    """Number of tokens in ``text`` (0 for None or empty)."""
    return len(_TOKEN_RE.findall(text)) if text else 0


def content_text(content: Any) -> str:
    """The text of a message's content: the string, or its text parts (and plain strings) joined; else ""."""
    if isinstance(content, str):
        return content
    items = content if isinstance(content, list) else [content]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
    return "".join(texts)


def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message
    return None


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last ``user`` message ("" when there is none); markers included."""
    message = _last_user(messages)
    return content_text(message.get("content")) if message is not None else ""


def media_note(messages: list[dict[str, Any]]) -> str:
    """``"[2 images, 1 video]"`` for the media parts of the last user message ("" when it has none)."""
    message = _last_user(messages)
    content = message.get("content") if message is not None else None
    items = content if isinstance(content, list) else [content]
    counts = {"image": 0, "video": 0}
    for item in items:
        if isinstance(item, dict) and item.get("type") in ("image_url", "video_url"):
            counts[item["type"][:5]] += 1
    said = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n]
    return f"[{', '.join(said)}]" if said else ""


def clean_prompt(raw: str) -> str:
    """The prompt the answer echoes: markers removed, whitespace stripped."""
    return MARKER_RE.sub("", raw).strip() if "[[" in raw else raw.strip()


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Deterministic prompt token count: per message, its content tokens plus one."""
    total = 0
    for message in messages:
        content = message.get("content")
        total += 1 + count_tokens(content_text(content))
    return total


def token_logprob(token: str) -> float:
    """Deterministic log probability of a token."""
    return -(zlib.crc32(token.encode()) % 1000) / 1000


def logprob_entry(token: str, top: int) -> dict[str, Any]:
    """One OpenAI ``ChatCompletionTokenLogprob`` object for ``token`` with ``top`` alternatives."""
    lp = token_logprob(token)
    alternatives = []
    for k in range(top):
        alt = token if k == 0 else f"{token}~{k}"
        alternatives.append({"token": alt, "logprob": round(lp - k, 3), "bytes": list(alt.encode())})
    return {"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": alternatives}


# --------------------------------------------------------------------------------------------- tool args


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) so pydantic-made schemas work."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        target: Any = root
        if isinstance(ref, str) and ref.startswith("#"):
            for part in ref.lstrip("#").strip("/").split("/"):
                if not part:
                    continue
                target = target.get(part, {}) if isinstance(target, dict) else {}
        else:
            target = {}
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **merged} if isinstance(target, dict) else merged
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _example_string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    value = {
        "date": "2024-01-01",
        "date-time": "2024-01-01T00:00:00Z",
        "time": "00:00:00",
        "email": "user@example.com",
        "uri": "https://example.com/",
        "url": "https://example.com/",
        "uuid": "00000000-0000-4000-8000-000000000000",
        "ipv4": "127.0.0.1",
        "hostname": "example.com",
    }.get(fmt if isinstance(fmt, str) else "", f"example {name}" if name else "example")
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    if isinstance(min_len, int) and len(value) < min_len:
        value = value + "x" * (min_len - len(value))
    if isinstance(max_len, int) and len(value) > max_len:
        value = value[:max_len]
    return value


def _example_number(schema: dict[str, Any], integer: bool) -> int | float:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    value: float = 1
    if isinstance(lo, (int, float)):
        value = lo
    elif isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        value = xlo + 1 if integer else xlo + 0.5
    if isinstance(hi, (int, float)) and value > hi:
        value = hi
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool) and value >= xhi:
        value = xhi - 1 if integer else (xhi - 0.5 if not isinstance(xlo, (int, float)) else (xlo + xhi) / 2)
    multiple = schema.get("multipleOf")
    if integer:
        value = int(value) if float(value).is_integer() else int(value) + 1
        if isinstance(multiple, int) and multiple > 0 and value % multiple:
            value = value + (multiple - value % multiple)
        return int(value)
    return float(value)


def example_for_schema(
    schema: Any, root: dict[str, Any] | None = None, name: str = "", depth: int = 0, seed: str = ""
) -> Any:
    """A JSON value that validates against ``schema`` for the common JSON-schema vocabulary.

    Handles ``type`` (incl. lists), ``enum``, ``const``, ``default``, ``anyOf``/``oneOf`` (first branch),
    ``allOf`` (merged), local ``$ref``, string formats and length limits, numeric bounds, ``minItems`` and
    nested objects (every declared property is filled in, so ``required`` is always met).
    """
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if depth > 12:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][zlib.crc32(f"{seed}\x00{name}".encode()) % len(schema["enum"]) if seed else 0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            non_null = [b for b in branches if _resolve(b, root).get("type") != "null"] or branches
            return example_for_schema(non_null[0], root, name, depth + 1, seed)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part, root)
            for k, v in part.items():
                if k == "properties" and isinstance(v, dict):
                    merged["properties"] = {**merged.get("properties", {}), **v}
                elif k == "required" and isinstance(v, list):
                    merged["required"] = [*merged.get("required", []), *v]
                else:
                    merged.setdefault(k, v)
        return example_for_schema(merged, root, name, depth + 1, seed)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else ("array" if "items" in schema else "string")
    if kind == "string":
        return _example_string(schema, name)
    if kind == "integer":
        return _example_number(schema, integer=True)
    if kind == "number":
        return _example_number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        min_items = schema.get("minItems")
        count = max(1, min_items if isinstance(min_items, int) else 1)
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        values = []
        for i in range(count):
            sub = prefix[i] if isinstance(prefix, list) and i < len(prefix) else items
            values.append(example_for_schema(sub if isinstance(sub, dict) else {}, root, name, depth + 1, seed))
        if schema.get("uniqueItems") and len(values) > 1:
            values = [v if not isinstance(v, (int, float)) else v + i for i, v in enumerate(values)]
            values = [f"{v}{i}" if isinstance(v, str) else v for i, v in enumerate(values)]
        return values
    # object
    props = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for prop_name, prop_schema in props.items():
        result[prop_name] = example_for_schema(prop_schema, root, prop_name, depth + 1, seed)
    for req in schema.get("required") or []:
        if req not in result:
            result[req] = "example"
    return result


#: Values of each JSON type, for :func:`invalid_for_schema` to pick one the property does not allow.
_WRONG: tuple[tuple[Any, frozenset[str]], ...] = (
    ("wrong type", frozenset({"string"})),
    (12345, frozenset({"integer", "number"})),
    (["wrong type"], frozenset({"array"})),
    (True, frozenset({"boolean"})),
)


def invalid_for_schema(schema: Any) -> Any:
    """An object that breaks ``schema``: every declared property gets a value of the wrong type.

    An enum or const property gets a string outside it; with no properties, ``required`` fails on ``{}``.
    """
    root = schema if isinstance(schema, dict) else {}
    schema = _resolve(schema, root)
    props = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for name, sub in props.items():
        sub = _resolve(sub, root)
        if "enum" in sub or "const" in sub:
            result[name] = "not-one-of-the-allowed-values"
            continue
        kind = sub.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind}
        result[name] = next((value for value, types in _WRONG if not types & kinds), None)
    return result


def schema_instruction(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The schema of a JSON instruction: a system/developer message with ``JSON Schema`` then a JSON object."""
    decoder = json.JSONDecoder()
    for message in messages:
        content = message.get("content")
        if message.get("role") not in ("system", "developer") or not isinstance(content, str):
            continue
        at = content.find("JSON Schema")
        start = content.find("{", at) if at >= 0 else -1
        if start >= 0:
            try:
                schema = decoder.raw_decode(content, start)[0]
            except ValueError:
                continue
            if isinstance(schema, dict):
                return schema
    return None


_INVALID_OUTPUT = re.compile(r"\[\[fault:invalid_output(?::times=(\d+))?\]\]")


def invalid_output_due(messages: list[dict[str, Any]]) -> bool:
    """Whether ``[[fault:invalid_output]]`` asks for an invalid answer now (see the module docstring)."""
    for at in range(len(messages) - 1, -1, -1):
        message = messages[at]
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str) or "[[fault:invalid_output" not in content:
            continue
        found = _INVALID_OUTPUT.search(content)
        times = int(found.group(1)) if found and found.group(1) else 1
        answered = sum(1 for later in messages[at + 1 :] if later.get("role") == "assistant")
        return answered < times
    return False


# --------------------------------------------------------------------------------------------- choices


@dataclass
class Choice:
    """One generated choice: either text (``tokens``) or a tool call (``tool_call``)."""

    index: int
    tokens: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    tool_call: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        if self.tool_call is not None:
            return count_tokens(self.tool_call["function"]["arguments"])
        return len(self.tokens)


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None when the answer must be text."""
    tools = body.get("tools")
    if not tools:
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    if isinstance(choice, dict):  # forced: called even after tool messages
        wanted = (choice.get("function") or {}).get("name")
        for tool in tools:
            if (tool.get("function") or {}).get("name") == wanted:
                return tool["function"]
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        if choice != "required":
            return None
        # "required" holds after tool results too: the first tool not called yet (the provider puts its
        # final_result tool last, so the Python tools run first), then the last one again.
        called = {
            (call.get("function") or {}).get("name")
            for message in messages
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict)
        }
        fresh = [t for t in tools if (t.get("function") or {}).get("name") not in called]
        return (fresh or tools[-1:])[0].get("function") or {}
    return tools[0].get("function") or {}


def _tool_results_text(messages: list[dict[str, Any]]) -> str:
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
    trailing = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.append(message)
    parts = []
    for message in reversed(trailing):
        call_id = message.get("tool_call_id") or ""
        content = message.get("content")
        parts.append(f"{names.get(call_id) or call_id}={content if isinstance(content, str) else ''}")
    return "; ".join(parts)


def _truncate(text: str, stop: Any, limit: int | None) -> tuple[list[str], str]:
    finish = "stop"
    if stop:
        stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
        cut = min((p for p in (text.find(s) for s in stops) if p >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
    tokens = tokenize(text)
    if limit is not None and len(tokens) > limit:
        tokens = tokens[:limit]
        finish = "length"
    return tokens, finish


def token_limit(body: dict[str, Any]) -> int | None:
    """The effective completion token limit: the smaller of max_tokens and max_completion_tokens."""
    limits = [v for v in (body.get("max_tokens"), body.get("max_completion_tokens")) if isinstance(v, int)]
    return min(limits) if limits else None


def make_choices(body: dict[str, Any], prompt: str, *, filtered: bool = False) -> list[Choice]:
    """Every choice of the answer to ``body`` (``prompt`` is the cleaned last user message); ``filtered``: the
    content filter stops each after its first token."""
    messages = body.get("messages") or []
    n = body.get("n") or 1
    if filtered:
        note = media_note(messages)
        text = "Echo: " + " ".join(part for part in (prompt, note) if part)
        return [Choice(index=i, tokens=tokenize(text)[:1], finish_reason="content_filter") for i in range(n)]
    tool = _chosen_tool(body)
    choices = []
    invalid = invalid_output_due(messages)
    if tool is not None:
        name = tool.get("name", "")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        args = invalid_for_schema(parameters) if invalid else example_for_schema(parameters, seed=prompt)
        arguments = json.dumps(args)
        for i in range(n):
            digest = hashlib.sha1(f"{name}\x00{prompt}\x00{i}".encode()).hexdigest()[:24]
            call = {"id": f"call_{digest}", "type": "function", "function": {"name": name, "arguments": arguments}}
            choices.append(Choice(index=i, finish_reason="tool_calls", tool_call=call))
        return choices
    ends_with_tool = bool(messages) and messages[-1].get("role") == "tool"
    schema = None if ends_with_tool else schema_instruction(messages)
    if schema is not None:
        value = invalid_for_schema(schema) if invalid else example_for_schema(schema, seed=prompt)
        base, prefix0, prefix_i = json.dumps(value), "", ""
    elif ends_with_tool:
        base, prefix0, prefix_i = _tool_results_text(messages), "Tool results: ", "Tool results {i}: "
    else:
        note = media_note(messages)
        base, prefix0, prefix_i = " ".join(part for part in (prompt, note) if part), "Echo: ", "Echo {i}: "
    limit = token_limit(body)
    stop = body.get("stop")
    for i in range(n):
        text = (prefix0 if i == 0 else prefix_i.format(i=i)) + base
        tokens, finish = _truncate(text.rstrip(), stop, limit)
        choices.append(Choice(index=i, tokens=tokens, finish_reason=finish))
    return choices
