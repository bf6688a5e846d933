"""How operators turn their arguments into one request: shared by the single and the batch operator.

Import-light on purpose (no pydantic, no httpx): DAG files import the operators on every parse. Validation
happens later, in the hook, before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_agentchat.exceptions import InvalidRequestError

#: Body fields of the reference (besides ``messages``) that operators take as keywords. A test checks this
#: against ``ChatCompletionRequest`` so the two cannot drift apart.
BODY_FIELDS: tuple[str, ...] = (
    "model",
    "stream",
    "stream_options",
    "stop",
    "n",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "metadata",
    "reasoning_effort",
    "seed",
    "user",
    "include_retrieval_info",
    "include_functions_info",
    "include_guardrails_info",
    "provide_citations",
    "extra_body",
)


def load_json(field: str, value: Any) -> Any:
    """A templated field may arrive as JSON text (a rendered ``.json`` / ``.j2`` file): parse it."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise InvalidRequestError([(field, f"not valid JSON ({exc.msg} at line {exc.lineno})")]) from None
    return value


def compose_messages(
    *,
    prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``system_prompt`` first, then the conversation, then ``prompt`` as the last user message."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    if messages is not None:
        if not isinstance(messages, Sequence) or isinstance(messages, str):
            raise InvalidRequestError([("messages", "must be a list of message objects")])
        out.extend(dict(m) if isinstance(m, Mapping) else m for m in messages)
    if prompt is not None:
        out.append({"role": "user", "content": prompt})
    if not out:
        raise InvalidRequestError([("messages", "give a prompt, messages, or a request with messages")])
    return out


def merge_request(request: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A request body as the reference shows it, with explicitly given keyword fields taking precedence.

    Keys of ``request`` the reference does not name move into ``extra_body`` so that a body tried elsewhere
    drops in unchanged.
    """
    body = dict(request or {})
    body.pop("messages", None)
    extra = dict(body.pop("extra_body", None) or {})
    for key in list(body):
        if key not in BODY_FIELDS:
            extra[key] = body.pop(key)
    body.update({key: value for key, value in overrides.items() if value is not None and key != "extra_body"})
    extra.update(overrides.get("extra_body") or {})
    if extra:
        body["extra_body"] = extra
    return body
