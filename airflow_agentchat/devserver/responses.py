"""Wire shapes the dev server sends: completions, SSE chunks, DO extras and every error body shape.

Pure functions from :class:`~airflow_agentchat.devserver.answers.Choice` objects to JSON-ready dicts or
bytes, so the same answer renders identically in plain and streaming mode.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

from airflow_agentchat.devserver.answers import Choice, logprob_entry

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>devserver</center>\r\n</body>\r\n</html>\r\n"
)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return _dumps(value).encode()


def sse(value: Any) -> bytes:
    """One SSE event carrying ``value`` as JSON."""
    return b"data: " + dumps(value) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, Any]:
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def do_extras(body: dict[str, Any], prompt: str, choices: list[Choice]) -> dict[str, Any]:
    """DigitalOcean's optional top-level blocks, for the ``include_*_info`` / ``provide_citations`` flags."""
    extras: dict[str, Any] = {}
    doc_id = "doc-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    if body.get("include_retrieval_info"):
        extras["retrieval"] = {
            "retrieved_data": [
                {
                    "id": doc_id,
                    "index": "devserver-kb",
                    "filename": "devserver.md",
                    "page_content": prompt,
                    "score": 1.0,
                }
            ]
        }
    if body.get("include_functions_info"):
        calls = [c.tool_call for c in choices if c.tool_call is not None][:1]
        extras["functions"] = {
            "called_functions": [c["function"]["name"] for c in calls],
            "function_details": [
                {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in calls
            ],
        }
    if body.get("include_guardrails_info"):
        triggered = []
        if "guardrail" in prompt.lower():
            triggered.append({"rule_name": "devserver-keyword", "message": "prompt mentions 'guardrail'"})
        extras["guardrails"] = {"triggered_guardrails": triggered}
    if body.get("provide_citations"):
        extras["citations"] = [
            {"id": doc_id, "index": 0, "title": "devserver.md", "url": f"https://example.invalid/{doc_id}"}
        ]
    return extras


def _logprobs(choice: Choice, top: int) -> dict[str, Any]:
    return {"content": [logprob_entry(t, top) for t in choice.tokens], "refusal": None}


def completion(
    cid: str, created: int, model: str, body: dict[str, Any], choices: list[Choice], usage_: dict[str, Any]
) -> dict[str, Any]:
    """A whole ``chat.completion`` object."""
    want_logprobs = body.get("logprobs") is True
    top = body.get("top_logprobs") or 0
    rendered = []
    for choice in choices:
        if choice.tool_call is not None:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [choice.tool_call]}
        else:
            message = {"role": "assistant", "content": choice.text, "refusal": None}
        rendered.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": _logprobs(choice, top) if want_logprobs and choice.tool_call is None else None,
                "finish_reason": choice.finish_reason,
            }
        )
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": rendered,
        "usage": usage_,
    }


def _split_arguments(arguments: str, parts: int = 4) -> list[str]:
    """Cut ``arguments`` into a few fragments, as models stream them."""
    if len(arguments) <= 1:
        return [arguments]
    step = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


def chunks(
    cid: str, created: int, model: str, body: dict[str, Any], choices: list[Choice], extras: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Every ``chat.completion.chunk`` of a streamed answer, choice after choice (usage chunk not included).

    Per choice: a role chunk, one chunk per token (or tool-call fragments: the first delta of the index
    carries id/type/name, the rest carry only ``arguments`` pieces), then a finish chunk. DO extras ride on
    the last finish chunk.
    """
    want_logprobs = body.get("logprobs") is True
    top = body.get("top_logprobs") or 0
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {
            **head,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }

    for n, choice in enumerate(choices):
        call = choice.tool_call
        if call is not None:
            first = {"index": 0, "id": call["id"], "type": "function"}
            first["function"] = {"name": call["function"]["name"], "arguments": ""}
            yield chunk(choice.index, {"role": "assistant", "content": None, "tool_calls": [first]})
            for fragment in _split_arguments(call["function"]["arguments"]):
                yield chunk(choice.index, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
        else:
            yield chunk(choice.index, {"role": "assistant", "content": ""})
            for token in choice.tokens:
                lp = {"content": [logprob_entry(token, top)], "refusal": None} if want_logprobs else None
                yield chunk(choice.index, {"content": token}, logprobs=lp)
        last = chunk(choice.index, {}, choice.finish_reason)
        if n == len(choices) - 1 and extras:
            last.update(extras)
        yield last


def usage_chunk(cid: str, created: int, model: str, usage_: dict[str, Any]) -> dict[str, Any]:
    """The extra final chunk of ``stream_options.include_usage``: no choices, only usage."""
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_,
    }


# ------------------------------------------------------------------------------------------ fault bodies


def fault_headers(params: dict[str, Any]) -> dict[str, str]:
    """Retry headers and any extra headers a fault spec asks for."""
    headers: dict[str, str] = {}
    retry_after = params.get("retry_after")
    if retry_after is not None:
        if params.get("retry_after_date"):
            headers["retry-after"] = formatdate(time.time() + float(retry_after), usegmt=True)
        else:
            headers["retry-after"] = f"{retry_after:g}" if isinstance(retry_after, float) else str(retry_after)
    if params.get("retry_after_ms") is not None:
        headers["retry-after-ms"] = str(params["retry_after_ms"])
    extra = params.get("headers")
    if isinstance(extra, dict):
        headers.update({str(k): str(v) for k, v in extra.items()})
    return headers


def fault_response(kind: str, params: dict[str, Any], request_id: str) -> tuple[int, str, bytes]:
    """``(status, media type, body)`` of an error-kind fault (not reset/truncate/malformed)."""
    message = params.get("message")
    status = params.get("status")
    if kind == "502":
        return int(status or 502), "text/html", BAD_GATEWAY_HTML.encode()
    if kind == "429":
        msg = message or "Rate limit reached for requests. Please try again later."
        return int(status or 429), "application/json", dumps(error_body(msg, "rate_limit_error", "rate_limit_exceeded"))
    if kind == "insufficient_quota":
        msg = message or "You exceeded your current quota, please check your plan and billing details."
        body = error_body(msg, "insufficient_quota", "insufficient_quota")
        return int(status or 429), "application/json", dumps(body)
    if kind == "error_text":
        return int(status or 500), "application/json", dumps({"error": message or "internal error (devserver fault)"})
    if kind == "too_many_requests":
        body = {"id": "too_many_requests", "message": message or "Too many requests", "request_id": request_id}
        return int(status or 429), "application/json", dumps(body)
    if kind == "detail":
        if params.get("detail_list"):
            detail = [{"loc": ["body", "messages"], "msg": message or "field required", "type": "value_error"}]
            return int(status or 422), "application/json", dumps({"detail": detail})
        return int(status or 400), "application/json", dumps({"detail": message or "Bad request (devserver fault)"})
    if kind == "error_event":
        code = int(status or 500)
        body = error_body(message or "The server had an error while processing your request.", "server_error")
        return code, "application/json", dumps(body)
    code = int(status or kind)
    type_ = "server_error" if code >= 500 else "invalid_request_error"
    default = {
        500: "The server had an error while processing your request.",
        503: "The engine is currently overloaded, please try again later.",
        408: "Request timed out.",
        409: "Conflict.",
    }.get(code, f"devserver injected HTTP {code}")
    return code, "application/json", dumps(error_body(message or default, type_, None))
