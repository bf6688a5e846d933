"""How arguments become one request body: the body fields, JSON-text inputs, the messages, request= merging.

Shared by the operators and the batch engine's items, so it sits beside ``models.py`` rather than in
``operators/`` (a lower layer must not import a higher one). Import-light on purpose (no pydantic, no httpx):
DAG files import the operators on every parse. Validation happens later, in the hook, before anything is sent.
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
        except json.JSONDecodeError as exc:
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

    A key of ``request`` that the reference does not name is refused (a typo like ``temprature`` would
    otherwise be sent and silently ignored by the agent); fields of other servers belong in ``extra_body``.
    """
    body = dict(request or {})
    body.pop("messages", None)
    unknown = [key for key in body if key not in BODY_FIELDS]
    if unknown:
        raise InvalidRequestError([(f"request.{key}", _unknown_field_rule(key)) for key in unknown])
    extra = {
        **_mapping("request.extra_body", body.pop("extra_body", None)),
        **_mapping("extra_body", overrides.get("extra_body")),
    }
    body.update({key: value for key, value in overrides.items() if value is not None and key != "extra_body"})
    if extra:
        body["extra_body"] = extra
    return body


def _mapping(field: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError([(field, f"must be an object of extra body fields, got {type(value).__name__}")])
    return value


def _unknown_field_rule(key: str) -> str:
    from difflib import get_close_matches

    guess = get_close_matches(str(key), BODY_FIELDS, n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"not a body field of the reference; {hint}put fields the reference does not name in extra_body"
