"""What a completion task does with each answer besides returning it: count it against the budget and in
metrics (:class:`TaskSpend`), log it (as it streams, and one usage line), push ``response`` / ``usage`` /
``cost`` (also when the task fails after paid requests) and pick what ``return_value`` holds. No requests
here: the hook sends them; the spend of earlier tries is read from and written to the task state store through
:mod:`airflow_agentchat.operators.task_state`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow_agentchat.metrics import TaskMetrics, error_kind
from airflow_agentchat.operators.answer_cache import TaskCache
from airflow_agentchat.operators.task_state import SPEND_KEY, TaskStore, load_spend, save_spend
from airflow_agentchat.spend import Budget, BudgetExhaustedError, completion_cap, estimate
from airflow_agentchat.usage import ZERO, TokenUsage

if TYPE_CHECKING:
    from airflow_agentchat.models import ChatCompletion, ChatCompletionChunk


class TaskSpend:
    """Budget, prices, metrics and counters of one task try."""

    def __init__(self, operator: Any, context: Mapping[str, Any]) -> None:
        self.log = operator.log
        self.prices = operator.prices()
        budget = Budget(operator.max_total_tokens, operator.max_cost, self.prices)
        # The spend of earlier tries is kept only for a budget (nothing else reads it).
        self._store = TaskStore.of(context, self.log) if budget.active else TaskStore(None, self.log)
        budget.used = load_spend(self._store)
        self.budget = budget
        if not self._store.available and self.budget.active:
            from airflow_agentchat.compat import warn_no_task_state_store

            warn_no_task_state_store("The token budget counts this try only", self.log)
        self.metrics = TaskMetrics.create(operator.agentchat_conn_id, context)
        self.usage = ZERO  # this try's, every round
        self.requests = 0
        self.attempts = 0
        self.errors: dict[str, int] = {}
        self.model: str | None = None  # as the last answer names it
        self.pushed = False
        self.on_budget_exhausted: str = getattr(operator, "on_budget_exhausted", "fail")
        self.cache = TaskCache.of(operator)  # the response cache (cache_path), None when off

    def cached(self, request: Any) -> bool:
        """True when the response cache answers ``request`` (the first of the conversation): nothing to send."""
        return self.cache is not None and self.cache.answer(request) is not None

    def check(self, request: Any) -> tuple[int, int]:
        """Reserve a request's estimate, or fail with what was used, the budget and what the request needed."""
        if not self.budget.active:
            return 0, 0
        prompt = estimate(request)
        # Without a cap nothing is reserved for the answer: one request is sent, and an answer that takes the
        # spend over the budget ends the task (a batch reserves a mean instead, to pace many requests).
        cap = completion_cap(request) or 0
        if not self.budget.reserve(prompt, cap):
            raise BudgetExhaustedError(
                f"Budget exhausted: {self.budget.describe()} (this task's tries and repair rounds together); the "
                f"next request needs about {prompt + cap} tokens, so it was not sent."
            )
        return prompt, cap

    def send(self, request: Any, send: Callable[[Any], Any]) -> Any:
        """Send through ``send`` within the budget and count the outcome; a response cache hit is neither."""
        if self.cache is not None and (hit := self.cache.answer(request)) is not None:
            return hit
        reservation = self.check(request)
        started = time.perf_counter()
        try:
            completion = send(request)
        except Exception as exc:
            self.failed(exc, started, reservation)
            raise
        self.paid(completion, started, reservation)
        return completion

    def paid(self, completion: Any, started: float | None, reservation: tuple[int, int] = (0, 0)) -> None:
        """Count an answer (also one that arrived through the triggerer); one that takes the task's spend over
        its budget ends the task (``BudgetExhaustedError``, after it is counted), as the batch stops at its own."""
        usage = completion.usage_dict()
        self.usage += TokenUsage.of(usage)
        self.budget.settle(*reservation, usage)
        if self.budget.active:
            save_spend(self._store, self.budget.used)
        self.model = getattr(completion, "model", None) or self.model
        meta = completion.meta
        attempts = int(meta.get("attempts") or 1)
        self.requests += 1
        self.attempts += attempts
        if self.metrics is not None:
            latency = meta.get("latency_ms")
            if latency is None and started is not None:
                latency = round((time.perf_counter() - started) * 1000, 1)
            self.metrics.request("ok", attempts, latency, usage)
            self.metrics.flush()
        if self.budget.active and self._over():
            self.budget.exhausted = True
            raise BudgetExhaustedError(
                f"Budget exhausted: {self.budget.describe()} (this task's tries and rounds together); the last "
                "answer took the task over its budget, so nothing more is sent."
            )

    def _over(self) -> bool:
        budget = self.budget
        if budget.max_total_tokens is not None and budget.used.total_tokens > budget.max_total_tokens:
            return True
        return budget.max_cost is not None and (budget.used_cost or 0.0) > budget.max_cost

    def failed(self, exc: BaseException, started: float | None, reservation: tuple[int, int] = (0, 0)) -> None:
        self.budget.settle(*reservation, None)
        kind = error_kind(exc)
        attempts = int(getattr(exc, "attempts", 0) or 1)
        self.requests += 1
        self.attempts += attempts
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if self.metrics is not None:
            latency = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
            self.metrics.request(kind, attempts, latency, None)
            self.metrics.flush()

    def invalid_output(self) -> None:
        """An answer that did not match the output schema (counted in lineage; the request itself was ok)."""
        self.errors["invalid_output"] = self.errors.get("invalid_output", 0) + 1

    def push(self, ti: Any, usage: Mapping[str, Any] | None = None) -> None:
        """``usage`` and ``cost`` to XCom: this try's rounds unless ``usage`` is given."""
        pushed = self.usage.as_dict() if usage is None else dict(usage)
        self.pushed = True
        ti.xcom_push(key="usage", value=pushed)
        cost = self.prices.cost(pushed)
        if cost is not None:
            ti.xcom_push(key="cost", value=cost)

    def succeeded(self) -> None:
        """Forget the earlier tries' spend: a cleared, finished task starts with a fresh budget."""
        if self.budget.active:
            self._store.delete(SPEND_KEY)

    def facts(self, host: str | None, model: str | None) -> dict[str, Any]:
        return {
            "host": host,
            "model": model,
            "usage": self.usage.as_dict(),
            "requests": self.requests,
            "attempts": self.attempts,
            "errors": dict(self.errors),
            "cost": self.prices.cost(self.usage),
        }


#: A streamed line longer than this is logged before its newline arrives.
_LINE = 160


def fold_logged(
    chunks: Iterable[ChatCompletionChunk], log: Any, meta: Mapping[str, Any] | None = None
) -> ChatCompletion:
    """Log a streamed answer as it arrives, one readable line at a time, and fold the chunks into a completion
    that carries ``meta`` (the attempts and request id :meth:`AgentChatHook.open_stream` gives)."""
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
    completion = folder.result()
    completion._meta = dict(meta or {})
    return completion


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
    ``conn_id``: the connection that answered. With a response cache, ``cached`` says whether the answer came
    from it; a hit pushes zero ``usage`` (nothing paid now) and its original usage as ``cached_usage``, and a
    paid answer is stored when it is valid (publishing is the success path, or an invalid answer given up on)."""
    usage = dict(usage if usage is not None else completion.usage_dict())
    cache = spend.cache if spend is not None else None
    hit = cache is not None and cache.is_hit(completion)
    if hit:  # the hit was the conversation's only answer: it was final, so no round followed it
        ti.xcom_push(key="cached_usage", value=usage)
        usage = ZERO.as_dict()
    elif cache is not None and spend is not None and "invalid_output" not in spend.errors:
        cache.keep(completion)
    if cache is not None:
        ti.xcom_push(key="cached", value=hit)
    log_usage(log, completion, usage, started)
    response = completion.to_dict()
    if hit:
        response["cached"] = True
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
    """Usage and cost reach XCom even when the task fails after paid requests; an exhausted budget ends the
    task per ``on_budget_exhausted`` (``"succeed"``: a warning, and the task succeeds with no ``return_value``)."""
    try:
        yield
    except BaseException as exc:
        ti = context.get("ti")
        if ti is not None and spend.requests and not spend.pushed:
            spend.push(ti)
        if not (isinstance(exc, BudgetExhaustedError) and spend.on_budget_exhausted == "succeed"):
            raise
        spend.log.warning("%s on_budget_exhausted='succeed': the task succeeds.", exc)
    spend.succeeded()
