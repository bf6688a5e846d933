"""What a completion task does with an answer besides returning it: log it (as it streams, and one usage line),
push ``response`` / ``usage`` / ``cost`` (also when the task fails after paid requests) and pick what
``return_value`` holds. No requests here: the hook sends them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_agentchat.models import ChatCompletion, ChatCompletionChunk
    from airflow_agentchat.operators.spending import TaskSpend

#: A streamed line longer than this is logged before its newline arrives.
_LINE = 160


def fold_logged(chunks: Iterable[ChatCompletionChunk], log: Any) -> ChatCompletion:
    """Log a streamed answer as it arrives, one readable line at a time, and fold the chunks into a completion."""
    from airflow_agentchat.streaming import ChunkFolder

    folder = ChunkFolder()
    line: list[str] = []
    for chunk in chunks:
        folder.add(chunk)
        *complete, rest = chunk.text.split("\n")
        for part in complete:
            log.info("│ %s", "".join(line) + part)
            line = []
        line.append(rest)
        if sum(map(len, line)) > _LINE:
            log.info("│ %s", "".join(line))
            line = []
    if "".join(line):
        log.info("│ %s", "".join(line))
    return folder.result()


def log_usage(log: Any, completion: ChatCompletion, usage: Mapping[str, Any], started: float | None) -> None:
    """The one line every completion task logs: tokens, latency, finish reasons, attempts, request id."""
    meta = completion.meta
    latency_ms = meta.get("latency_ms")
    if latency_ms is None and started is not None:
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
    finish = ",".join(sorted({str(c.finish_reason) for c in completion.choices})) or "none"
    log.info(
        "Agent chat completion: %s prompt + %s completion = %s tokens, %s ms, finish_reason=%s, choices=%d%s",
        usage.get("prompt_tokens", 0),
        usage.get("completion_tokens", 0),
        usage.get("total_tokens", 0),
        latency_ms,
        finish,
        len(completion.choices),
        "".join(f", {key}={meta[key]}" for key in ("attempts", "request_id", "conn_id") if meta.get(key) is not None),
    )


def returned(response: Mapping[str, Any], output: str) -> Any:
    """``return_value`` for ``output`` (``"text"``, ``"message"`` or ``"response"``); a list for ``n > 1``."""
    if output == "response":
        return response
    choices = sorted(response.get("choices", []), key=lambda c: c.get("index", 0))
    if output == "message":
        from airflow_agentchat.models import as_request_message

        # Ready to send back (tool round trips): only the fields a request message may carry.
        values = [as_request_message(choice.get("message", {})) for choice in choices]
    else:
        values = [choice.get("message", {}).get("content") for choice in choices]
    return values if len(values) > 1 else (values[0] if values else None)


def publish(
    log: Any,
    ti: Any,
    completion: ChatCompletion,
    output: str,
    spend: TaskSpend | None,
    started: float | None,
    *,
    usage: Mapping[str, Any] | None = None,
) -> Any:
    """Log the usage line, push ``response`` and ``usage`` (with ``cost`` when spend is tracked), return the
    ``return_value``. ``usage`` (default: the completion's) covers every round of a conversation. Both carry
    ``conn_id``: the connection that answered."""
    usage = dict(usage if usage is not None else completion.usage_dict())
    log_usage(log, completion, usage, started)
    response = completion.to_dict()
    if conn_id := completion.meta.get("conn_id"):  # which connection answered (a fallback after a failover)
        response["conn_id"] = usage["conn_id"] = conn_id
    ti.xcom_push(key="response", value=response)
    if spend is not None:
        spend.push(ti, usage)
    else:
        ti.xcom_push(key="usage", value=usage)
    return returned(response, output)


@contextmanager
def paid_for(context: Mapping[str, Any], spend: TaskSpend) -> Iterator[None]:
    """Usage and cost reach XCom even when the task fails after paid requests."""
    try:
        yield
    except BaseException:
        ti = context.get("ti")
        if ti is not None and spend.requests and not spend.pushed:
            spend.push(ti)
        raise
    spend.succeeded()
