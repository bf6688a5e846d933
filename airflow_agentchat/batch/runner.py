"""The batch engine: many requests in flight through the connections' hooks, within each agent's limits.

Shape: ``max_concurrency`` worker coroutines pull from one lazy iterator of prepared items (so input is read
as it is consumed, never all at once) and send each through :meth:`AgentChatHook.asend`, which owns
retries. Results become JSON lines in the :class:`~airflow_agentchat.batch.store.ResultStore`: on local
storage they are appended to the run's part at once and handed to the OS once per burst of results (one
write syscall for everything recorded in an event-loop turn); on object storage a writer thread puts the
buffer into a new part every ``flush_interval`` seconds, so storage latency never stalls the requests. The
ticker also renews the output's lease, and a lost lease stops the batch.

Connections: the primary, then each of ``fallback_conn_ids``, as :class:`~airflow_agentchat.batch.lanes.Lane`
objects. An item goes to the next one when its first request failed for good with an error another agent could
answer, or when the connection's breaker (:mod:`airflow_agentchat.batch.breaker`) is open; its line names the
connection in ``conn_id``. Each lane has its own hook, and so its own limits below.

Limits, all shared by every worker (per connection):

* concurrency: the number of workers (and the hook's connection pool size);
* ``requests_per_minute`` and ``tokens_per_minute``: the :class:`~airflow_agentchat.batch.rate.RateGate`.
  Every attempt, retries included, takes a request slot in the hook's ``before_attempt``, after any shared
  pause is over; each item reserves its token estimate here, once;
* shared back-off: a 429 or ``retry-after`` seen by any request pauses the whole hook
  (``hook.pause_remaining()``); workers wait for the pause *before* reserving tokens, and the hook waits for
  it before taking a request slot, so a pause does not leave a pile of slots to be spent at once when it
  ends.

Per-item errors become error lines; only a bug in this module stops the batch. Progress is logged every
``progress_interval`` seconds from counters (no per-item logging).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_agentchat.batch.cache_io import CacheIO
from airflow_agentchat.batch.items import Prepared, Rejected
from airflow_agentchat.batch.results import RunStats, result_line, summed
from airflow_agentchat.exceptions import AgentChatError, APIError, InvalidRequestError
from airflow_agentchat.failover import fails_over
from airflow_agentchat.metrics import error_kind
from airflow_agentchat.redaction import redact
from airflow_agentchat.spend import estimate as spend_estimate
from airflow_agentchat.structured_output import OutputValidationError, message_of, repair_request, result_fields

if TYPE_CHECKING:
    from airflow_agentchat.batch.lanes import Lane, LaneBudget
    from airflow_agentchat.batch.store import ResultStore
    from airflow_agentchat.response_cache import CachedAnswer
    from airflow_agentchat.structured_output import Outcome


@dataclass
class _Item:
    """What one item's requests added up to across its connections (its line's ``attempts`` and latency)."""

    attempts: int = 0
    latency: float = 0.0
    sent: bool = False  # counted in ``sent`` once, whichever connection it went to
    skipped: bool = False  # every connection's breaker was open: not sent at all


class BatchRunner:
    """Drive prepared items through the hook and into the store."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        store: ResultStore,
        *,
        max_concurrency: int = 50,
        include_response: bool = True,
        progress_interval: float = 5.0,
        log: logging.Logger | Any = None,
        secret: str | None = None,
        spec: Any = None,
        budget: LaneBudget | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not lanes:
            raise ValueError("a batch needs at least one connection")
        self.lanes = list(lanes)  # the primary connection, then each fallback (see batch/lanes.py)
        self.store = store
        self.max_concurrency = int(max_concurrency)
        self.include_response = include_response
        self.progress_interval = progress_interval
        self.log = log or logging.getLogger(__name__)
        self.stats = RunStats()
        self._writing: asyncio.Task[None] | None = None
        # every connection's key is kept out of the lines (the hooks remove their own; this is the second guard)
        self._secrets = [key for key in {secret, *(lane.hook.settings.api_key for lane in self.lanes)} if key]
        self._sync_pending = False
        self.spec = spec  # a structured_output.OutputSpec: every answer is validated against it
        # Spend: an active budget stops sending when the next request's estimate would go over it.
        self.budget = budget if budget is not None and budget.active else None
        self._last_failure: tuple[Lane, BaseException] | None = None  # the latest request that failed over
        self._caches = CacheIO(self.max_concurrency)  # answers from earlier runs; new valid answers are added

    # --------------------------------------------------------------------------------------------- run

    async def run(self, work: Iterator[Prepared | Rejected], *, total: int = 0, resumed: int = 0) -> RunStats:
        """Send everything ``work`` yields; flush the last results even when cancelled (``on_kill``)."""
        self.stats = RunStats(total=total, resumed=resumed)
        ticker = asyncio.create_task(self._tick())
        try:
            workers = [asyncio.create_task(self._worker(work)) for _ in range(self.max_concurrency)]
            everything = asyncio.gather(*workers)
            watched: list[asyncio.Future[Any]] = [everything, ticker]
            try:
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if ticker.done():  # only a lost lease ends the ticker: stop sending, keep what arrived
                    ticker.result()
                await everything
            except BaseException:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if self._writing is not None:
                await asyncio.gather(self._writing, return_exceptions=True)
            await self._caches.finish()
            self.store.flush()  # synchronous on purpose: it must happen even while being cancelled
            self.stats.finished = time.monotonic()
            self._flush_metrics()
            self._log_progress(final=True)
        return self.stats

    def _record(self, item_id: str, line: bytes) -> None:
        """Keep a result line; on appendable storage, hand it to the OS at the end of this loop turn."""
        store = self.store
        store.record(item_id, line)
        if store.appends and not self._sync_pending:
            self._sync_pending = True
            asyncio.get_running_loop().call_soon(self._sync)

    def _sync(self) -> None:
        self._sync_pending = False
        self.store.sync()

    async def _worker(self, work: Iterator[Prepared | Rejected]) -> None:
        stats, store, budget = self.stats, self.store, self.budget
        for entry in work:
            if budget is not None and budget.exhausted:
                break  # the entry taken stays unsent and unrecorded: a rerun with a larger budget sends it
            if isinstance(entry, Rejected):  # never sent: no connection (and no cost) to name
                stats.rejected += 1
                cost = 0.0 if self.lanes[0].priced is not None else None
                error = self._describe(entry.error)
                line = result_line(entry.id, error, attempts=0, latency_ms=0.0, context=entry.context, cost=cost)
                self._record(entry.id, line)
            else:
                await self._send(entry)
            if store.due() and self._writing is None:
                self._writing = asyncio.create_task(self._write(store.take()))

    async def _send(self, entry: Prepared) -> None:
        """Send one item through its connections in order and record its line once.

        Each connection's response cache is looked up first (a hit is recorded with that connection). An item
        leaves a connection whose breaker is open, or whose first request failed for good with an error another
        agent could answer (:func:`~airflow_agentchat.failover.fails_over`); repair rounds stay on the
        connection that answered. When no connection is left, the item's line is the last error.
        """
        item = _Item()
        failure: tuple[Lane, BaseException] | None = None
        for lane in self.lanes:
            key, hit = await self._caches.look_up(lane.cache, entry)
            if hit is not None:
                self._record_hit(entry, hit, lane)
                return
            if not lane.allow():
                continue
            if failure is not None:
                self.stats.failovers += 1
            error = await self._ask(lane, entry, key, item)
            if error is None:
                return
            failure = self._last_failure = (lane, error)
        if failure is None:  # every breaker open: the error that opened the last one
            failure = self._last_failure or (self.lanes[-1], AgentChatError("no connection is available"))
            item.skipped = True
        lane, error = failure
        self._record_error(entry, lane, error, item, [])

    async def _ask(self, lane: Lane, entry: Prepared, key: str | None, item: _Item) -> BaseException | None:
        """Send one item (and, with an output schema, its repair rounds) to one connection and record its line
        once, after its last round; a paid answer is recorded before anything else can wait. Returns the error
        when the first request failed over (nothing recorded)."""
        spec, stats, budget, metrics, gate = self.spec, self.stats, self.budget, lane.metrics, lane.gate
        request, prompt_estimate = entry.request, entry.est_prompt_tokens
        completion: Any = None
        outcome: Outcome | None = None
        paid: list[dict[str, Any]] = []  # the usage of every answer of this item
        latency, filtered = 0.0, None
        while True:
            estimate = await self._reserve(lane, prompt_estimate, entry.max_completion_tokens)
            if estimate is None:  # over budget: not sent; requests in flight still finish
                if completion is None:
                    lane.abandoned()
                    return None  # not recorded: a rerun with a larger budget sends it
                break  # no room for another repair round: the last (invalid) answer is recorded
            if not item.sent:
                item.sent = True
                stats.sent += 1
            stats.requests += 1
            started = time.perf_counter()
            try:
                answer = await lane.hook.asend(request)
            except asyncio.CancelledError:
                lane.abandoned()
                raise
            except Exception as exc:  # a per-item failure is recorded, never raised
                moves = self._failed_request(lane, exc, started, estimate, prompt_estimate, item)
                if moves and not paid:
                    return exc
                self._record_error(entry, lane, exc, item, paid)
                return None
            if completion is None:
                lane.succeeded()
            completion = answer
            meta = completion.meta
            usage = completion.usage_dict()
            paid.append(usage)
            stats.tokens.add(usage)
            tries = meta.get("attempts", 1)
            item.attempts += tries
            stats.attempts += tries
            latency += meta.get("latency_ms") or 0.0
            filtered = completion.content_filter_error()  # an error line of its own, its tokens still paid
            outcome = spec.parse(message_of(completion)) if spec is not None and filtered is None else None
            if outcome is None or outcome.ok or spec is None or len(paid) > spec.retries:
                break
            # Invalid and a repair round left: this answer is settled now, the next request sends the errors back.
            self._settle(lane, prompt_estimate, estimate, usage)
            if metrics is not None:
                metrics.request(OutputValidationError.kind, tries, meta.get("latency_ms"), usage)
            if gate.active or budget is not None:
                await gate.correct(estimate, usage)
            try:
                request = repair_request(spec, request, message_of(completion), outcome)
            except Exception:  # an answer that cannot be sent back (it cannot be validated): record it as it is
                estimate = None
                break
            prompt_estimate = spend_estimate(request)
        if item.latency or len(paid) > 1:  # failed over first, or repaired: the sum
            item.latency = round(item.latency + latency, 1)
        else:
            item.latency = completion.meta.get("latency_ms") or 0.0
        self._record_answer(entry, lane, key, completion, outcome, filtered, paid, item)
        if estimate is None:  # the last answer was settled before a round that did not happen
            return None
        usage = paid[-1]
        self._settle(lane, prompt_estimate, estimate, usage)
        if metrics is not None:
            if filtered is not None:
                kind = self._describe(filtered)["type"]
            else:
                kind = "ok" if outcome is None or outcome.ok else OutputValidationError.kind
            metrics.request(kind, completion.meta.get("attempts", 1), completion.meta.get("latency_ms"), usage)
        if gate.active or budget is not None:
            await gate.correct(estimate, usage)
        return None

    async def _reserve(self, lane: Lane, prompt_tokens: int, cap: int | None) -> int | None:
        """Reserve one request's estimate in the budget (at the connection's prices) and the connection's token
        rate (its request slot is the hook's ``before_attempt``); None when the budget has no room for it."""
        estimate = 0
        budget, gate = self.budget, lane.gate
        if budget is not None:
            estimate = gate.estimate(prompt_tokens, cap)
            if not budget.reserve_at(lane.priced, prompt_tokens, estimate - prompt_tokens):
                return None
        if gate.active:
            pause = lane.hook.pause_remaining()
            while pause > 0:  # a 429 paused the hook: wait here, before reserving tokens
                await asyncio.sleep(pause)
                pause = lane.hook.pause_remaining()
            if budget is None:
                estimate = gate.estimate(prompt_tokens, cap)
            await gate.acquire(estimate)
        return estimate

    def _settle(self, lane: Lane, prompt_tokens: int, estimate: int, usage: dict[str, Any] | None) -> None:
        if self.budget is not None:
            self.budget.settle_at(lane.priced, prompt_tokens, estimate - prompt_tokens, usage)

    def _failed_request(
        self, lane: Lane, exc: Exception, started: float, estimate: int, prompt_estimate: int, item: _Item
    ) -> bool:
        """Count a request that failed (attempts, latency, metrics, the budget's reservation released, the
        breaker told); True when it fails over."""
        # a request that cannot even be encoded never left this process
        attempts = 0 if isinstance(exc, UnicodeError) else getattr(exc, "attempts", 0) or 1
        self.stats.attempts += attempts
        item.attempts += attempts
        latency = round((time.perf_counter() - started) * 1000, 1)
        item.latency += latency
        self._settle(lane, prompt_estimate, estimate, None)
        if lane.metrics is not None and attempts:
            lane.metrics.request(error_kind(exc), attempts, latency, None)
        moves = fails_over(exc)
        if moves:
            lane.failed()
        elif attempts:
            lane.succeeded()  # an error of the request, not of the connection
        else:
            lane.abandoned()
        return moves

    def _record_error(
        self, entry: Prepared, lane: Lane, exc: BaseException, item: _Item, paid: list[dict[str, Any]]
    ) -> None:
        """The item's error line, naming the last connection tried; it carries what earlier repair rounds paid."""
        self.stats.failed += 1
        error = self._describe(exc)
        if item.skipped:
            error["breaker"] = "open"  # not sent: every connection's breaker was open
        usage = summed(paid) if paid else None
        cost = lane.priced.cost(usage) if lane.priced is not None else None
        self.stats.cost += cost or 0.0
        line = result_line(
            entry.id,
            error,
            usage=usage,
            attempts=item.attempts,
            latency_ms=round(item.latency, 1),
            context=entry.context,
            cost=cost,
            conn_id=lane.conn_id,
        )
        self._record(entry.id, line)

    def _record_answer(
        self,
        entry: Prepared,
        lane: Lane,
        key: str | None,
        completion: Any,
        outcome: Outcome | None,
        filtered: Exception | None,
        paid: list[dict[str, Any]],
        item: _Item,
    ) -> None:
        """The item's line from its last answer, usage summed over its rounds; a valid answer is cached under
        the item's first request, in the cache of the connection that answered."""
        stats, cache = self.stats, lane.cache
        fields: dict[str, Any] = {}
        invalid: dict[str, Any] | None = None
        if filtered is not None:
            invalid = self._describe(filtered)
        elif outcome is not None:
            fields, invalid = result_fields(outcome, lane.hook.settings.api_key, len(paid))
            fields["rounds"] = len(paid)
        if invalid is not None:
            stats.failed += 1
        else:
            stats.succeeded += 1
        if len(paid) > 1:
            stats.repairs += len(paid) - 1
        usage = paid[0] if len(paid) == 1 else summed(paid)
        meta = completion.meta
        response = completion.to_json() if self.include_response or key is not None else None
        answer = {"text": completion.text, "finish_reason": completion.finish_reason, **fields}
        cost = lane.priced.cost(usage) if lane.priced is not None else None
        self.stats.cost += cost or 0.0
        line = result_line(
            entry.id,
            invalid,
            answer=answer,
            usage=usage,
            attempts=item.attempts,
            latency_ms=item.latency,
            request_id=meta.get("request_id"),
            context=entry.context,
            response=response if self.include_response else None,
            cost=cost,
            conn_id=lane.conn_id,
        )
        # Record first: settling the token budget may wait, and a kill during that wait must not lose (and
        # later pay again for) an answer already received.
        self._record(entry.id, line)
        if key is not None and invalid is None and cache is not None and cache.writes:
            answer.pop("rounds", None)  # how this run got it, not part of the answer
            self._caches.put(cache, key, cache.entry(key, completion, answer, response, usage=usage))

    def _record_hit(self, entry: Prepared, hit: CachedAnswer, lane: Lane) -> None:
        """Record a cached answer: nothing sent, nothing paid now (no budget, rate slot or request metric)."""
        stats = self.stats
        stats.cached += 1
        stats.succeeded += 1
        stats.cached_tokens.add(hit.usage)
        cost = 0.0 if lane.priced is not None else None
        self.stats.cost += cost or 0.0
        line = result_line(
            entry.id,
            None,
            answer=hit.fields,
            attempts=0,
            latency_ms=0.0,
            request_id=hit.request_id,
            context=entry.context,
            response=hit.response if self.include_response else None,
            cost=cost,
            cached_usage=hit.usage,
            conn_id=lane.conn_id,
        )
        self._record(entry.id, line)

    def _describe(self, exc: BaseException) -> dict[str, Any]:
        message = str(exc)
        for secret in self._secrets:
            message = redact(message, secret)
        error: dict[str, Any] = {"type": error_kind(exc), "message": message}
        if isinstance(exc, APIError):
            error.update(status=exc.status, code=exc.code, request_id=exc.request_id)
        if isinstance(exc, InvalidRequestError) and exc.errors:
            error["errors"] = [list(pair) for pair in exc.errors]
        return error

    async def _write(self, lines: list[bytes]) -> None:
        try:
            await asyncio.to_thread(self.store.write_part, lines)
        except BaseException as exc:
            # Put the lines back so the next (or the final, synchronous) flush writes them; the final flush
            # raises if storage is still failing, so nothing is lost silently.
            self.store.put_back(lines)
            if not isinstance(exc, Exception):
                raise
            self.log.warning("Writing a result part failed (%s); will retry with the next flush", exc)
        finally:
            self._writing = None

    # ----------------------------------------------------------------------------------------- ticking

    async def _tick(self) -> None:
        """Time-based flushes (a slow, rate-limited batch still saves its work), lease renewal, progress lines."""
        # a quarter of the flush interval: no result waits much longer than flush_interval to be written
        step = max(0.05, min(1.0, self.store.flush_interval / 4, self.progress_interval))
        now = time.monotonic()
        next_log = now + self.progress_interval
        beat = self.store.lease.interval
        next_beat = now + beat
        while True:
            await asyncio.sleep(step)
            if self.store.due() and self._writing is None:
                self._writing = asyncio.create_task(self._write(self.store.take()))
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat
                try:
                    await asyncio.to_thread(self.store.heartbeat)
                except OSError as exc:  # storage hiccup: the lease stays ours until it goes stale
                    self.log.warning("Renewing the lease on the output failed (%s); will try again", exc)
            if now >= next_log:
                next_log += self.progress_interval
                self._log_progress()
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        for lane in self.lanes:
            if lane.metrics is not None:
                lane.metrics.flush()

    def _log_progress(self, final: bool = False) -> None:
        self.log.info(*self.stats.progress(final))


def run_coroutine(coro: Any) -> Any:
    """Run the batch on uvloop when it is installed (it comes with Airflow's uvicorn), else on asyncio.

    uvloop roughly halves the event loop's share of per-request CPU, which is what bounds a zero-latency
    batch on a small worker.
    """
    import sys

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
