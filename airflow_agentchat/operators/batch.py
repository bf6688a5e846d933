"""AgentChatBatchOperator: thousands of prompts per task, bounded, rate limited, resumable, shardable.

Agent endpoints have no batch API, so this operator *is* the batch: it streams items from ``prompts`` or a
JSONL ``input_path``, keeps ``max_concurrency`` requests in flight through the hook, writes one JSONL line
per item to ``output_path`` as results arrive, and on an Airflow retry sends only what is missing. See
``docs/batch.md`` for the input and output formats.

Module import stays cheap (DAG files are parsed constantly): the engine, the models and the HTTP client are
imported in ``execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_agentchat import arguments as rules
from airflow_agentchat.operators.base import AgentChatRequestOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.batch.rate import RateGate
    from airflow_agentchat.hooks.agent_chat import AgentChatHook


class AgentChatBatchOperator(AgentChatRequestOperator):
    """Send many chat completion requests concurrently and write every result to a JSONL file.

    Input (exactly one):

    :param prompts: a list of items (templated; may be an upstream task's XCom, e.g. ``rows_task()``). An
        item is a prompt string, a list of messages, or ``{"id", "prompt" | "messages", "system_prompt",
        "context", "params", <body field>...}``; per-item body fields override the operator's.
    :param input_path: a JSONL file of such items, one per line (templated; any ``ObjectStoragePath`` URI:
        ``file://``, ``s3://``, ``gs://``...). Use this with ``.expand(input_path=shards)``.
    :param storage_conn_id: the Airflow connection holding the storage credentials for ``input_path`` and
        ``output_path`` (templated), e.g. an ``aws`` connection for ``s3://``. Without it a plain
        ``s3://bucket/key`` uses no connection, only the worker's ambient credentials;
        ``s3://conn_id@bucket/key`` names the connection in the URI instead.

    Output:

    :param output_path: where results go (templated URI). One line per item id: ``id``, ``status``
        (``ok``/``error``), ``text``, ``finish_reason``, ``usage``, ``attempts``, ``latency_ms``,
        ``request_id``, ``response`` or ``error``, and the item's ``context``. Default for ``input_path``:
        ``<input stem>.results.jsonl`` beside the input (so each mapped shard gets its own output).
        ``return_value`` is a small summary (counts, token usage, path, elapsed, throughput).

    Throughput and limits:

    :param max_concurrency: requests in flight (also the hook's connection pool size).
    :param requests_per_minute: this task's request limit. The agent's own limit belongs to the connection
        (extra ``requests_per_minute``, enforced by the hook for every request, shared across tasks and
        workers through ``limit_backend_conn_id``); this can only lower it for this task. Requests, retries
        included, are paced to stay under it; the shards of a mapped task share it: each paces at the limit
        divided by the number of shards that can run at once (see :meth:`shards_at_once`).
    :param tokens_per_minute: this task's token limit (estimated up front, corrected by real usage), shared
        by the shards the same way. Like requests, the agent's own token limit is the connection's extra
        ``tokens_per_minute`` (the hook reserves every attempt's estimate under it); this can only lower it.
    :param max_failed_fraction: after writing everything, fail the task when more than this fraction of
        the items in the output failed (default 0: any failure fails the task, and the retry resends them).
    :param retry_failed: on a rerun, send again the items whose recorded result is a retryable error.
    :param include_response: put the full response object on each line (turn off for smaller outputs).
    :param flush_every: on object storage (which cannot append), write a part after this many results ...
    :param flush_interval: ... or after this many seconds, whichever comes first: about the most a SIGKILL
        loses there. On local files every result is appended as it arrives and these do not apply.
    :param progress_interval: seconds between progress log lines.

    Failover (see ``docs/failover.md``):

    :param fallback_conn_ids: connections an item goes to, in order, when its request failed for good on the
        previous one with an error another agent could answer (templated). Each connection keeps its own
        limits, prices, cache and breaker; every line's ``conn_id`` names the one that answered.
    :param breaker_failures: failures in a row that open a connection's breaker (default 5): items then skip
        it for ``breaker_cooldown`` seconds (default 60, or a ``timedelta``), after which one item probes it.

    Typed results (see ``docs/output-schemas.md``):

    :param output_schema: a pydantic model class or a JSON Schema dict (templated): each ok line gets
        ``"output"``, the validated value; an answer that does not match becomes an ``invalid_output`` error
        line (with ``raw``, what the agent answered), counted in the summary and sent again on a rerun with
        ``retry_failed``.
    :param output_strategy: ``"auto"`` (default), ``"tool"`` or ``"json"``, as on the completion operator.
    :param output_retries: repair rounds per item after an invalid answer (default 2), as on the completion
        operator: the errors go back to the agent in one more request, until the answer is valid or the rounds
        are spent. Each round is a request like any other (rate limits, budget, usage and cost of the item's
        line, which says how many answers it took in ``rounds``); ``0`` sends one request per item.

    Spend (see ``docs/operations.md``):

    :param max_total_tokens: a token budget for the whole batch, across its runs: before each request its
        estimate is reserved; when the next one would go over, sending stops, requests in flight finish, and
        unsent items get no line (a rerun with a larger budget sends them).
    :param max_cost: the same in money (needs the connection's ``prompt_token_price`` /
        ``completion_token_price``).
    :param on_budget_exhausted: ``"fail"`` (default) fails the task after writing the output; ``"succeed"``
        returns the summary, with ``budget_exhausted`` and ``not_sent`` in it.

    Across runs (see ``docs/incremental.md``):

    :param cache_path: a response cache (templated URI, ``storage_conn_id`` credentials; off when unset): an
        item whose request, endpoint and schema were answered validly before gets that answer (``cached:
        true``, zero tokens paid now) without a request; new valid answers are added.
    :param cache_ttl: seconds (or a ``timedelta``) an entry stays valid; default no expiry.
    :param cache_mode: ``"read_write"`` (default), ``"read_only"`` or ``"refresh"`` (send all, overwrite).
    :param cache_nondeterministic: also cache requests with temperature > 0 (or unset) and no ``seed``.
    :param forecast: ``"log"`` logs the expected items, tokens and cost before sending; ``"check"`` also
        refuses to start when they exceed ``max_total_tokens`` / ``max_cost``; ``"only"`` pushes the forecast
        to XCom (key ``forecast``) and sends nothing.

    Request (shared by every item, as on :class:`AgentChatCompletionOperator`): ``system_prompt``,
    ``cache_prompt`` (caches it, see ``docs/content-parts.md``), ``agentchat_conn_id``, ``timeout``,
    ``max_retries`` and the body fields of the reference (``model``, ``temperature``, ``max_tokens``, ``tools``,
    DO extras, ``extra_body``...).
    """

    template_fields: Sequence[str] = (
        "prompts",
        "input_path",
        "output_path",
        "storage_conn_id",
        "output_schema",
        "cache_path",
        "requests_per_minute",
        "tokens_per_minute",
        *AgentChatRequestOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "prompts": "json",
        "tools": "json",
        "extra_body": "json",
        "metadata": "json",
        "system_prompt": "md",
    }
    ui_color = "#dbe8fb"

    def __init__(
        self,
        *,
        prompts: Sequence[Any] | str | None = None,
        input_path: str | None = None,
        output_path: str | None = None,
        storage_conn_id: str | None = None,
        max_concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_failed_fraction: float = 0.0,
        retry_failed: bool = True,
        include_response: bool = True,
        flush_every: int = 1000,
        flush_interval: float = 1.0,
        progress_interval: float = 5.0,
        output_schema: Any = None,
        output_strategy: str = "auto",
        output_retries: int = 2,
        cache_path: str | None = None,
        cache_ttl: Any = None,
        cache_mode: str = "read_write",
        cache_nondeterministic: bool = False,
        forecast: str | None = None,
        breaker_failures: int = 5,
        breaker_cooldown: Any = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        rules.at_parse("breaker_failures", rules.breaker_failures(breaker_failures))
        self.breaker_failures, self.breaker_cooldown = breaker_failures, rules.breaker_cooldown(breaker_cooldown)
        from airflow_agentchat.response_cache import check_cache_args

        rules.at_parse("output_strategy", rules.output_strategy(output_strategy))
        rules.at_parse("output_retries", rules.output_retries(output_retries))
        from airflow_agentchat.spend import check_forecast

        check_cache_args(cache_path, cache_ttl, cache_mode, cache_nondeterministic)
        check_forecast(forecast)
        self.cache_path, self.cache_ttl, self.cache_mode = cache_path, cache_ttl, cache_mode
        self.cache_nondeterministic, self.forecast = cache_nondeterministic, forecast
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError("max_failed_fraction must be between 0 and 1")
        # An upstream task's XCom as input is named in lineage: remember which one before it is resolved.
        source = getattr(prompts, "operator", None)
        self._prompts_xcom = (source.task_id, getattr(prompts, "key", "return_value")) if source is not None else None
        self.prompts = prompts
        self.input_path = input_path
        self.output_path = output_path
        self.storage_conn_id = storage_conn_id
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_failed_fraction = max_failed_fraction
        self.retry_failed = retry_failed
        self.include_response = include_response
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self.progress_interval = progress_interval
        # A model class stays out of template_fields: Airflow "renders" a callable by calling it.
        self.output_model = output_schema if isinstance(output_schema, type) else None
        self.output_schema = None if self.output_model is not None else output_schema
        self.output_strategy, self.output_retries = output_strategy, output_retries
        self._loop: Any = None
        self._main: Any = None
        self._shards = 1
        self._facts: dict[str, Any] = {}  # what this run did, for lineage (see get_openlineage_facets_on_complete)
        self._lanes: list[Any] = []  # the connections of this run (batch/lanes.py)

    @cached_property
    def gate(self) -> RateGate:
        """Request pacing and token budget (this shard's share); the hook calls it before every retry, too."""
        from airflow_agentchat.batch.lanes import task_gate

        return task_gate(self.requests_per_minute, self.tokens_per_minute, self.hook.settings.limits, self._shards)

    def shards_at_once(self, context: Context) -> int:
        """How many task instances of this (mapped) task can send at once (see :func:`.shards.shards_at_once`)."""
        from airflow_agentchat.batch.shards import shards_at_once

        limited = bool(self.requests_per_minute or self.tokens_per_minute)
        if not limited and context.get("ti") is not None:  # the connection's limits are shared by the shards too
            limits = self.hook.settings.limits
            limited = bool(limits.requests_per_minute or limits.tokens_per_minute)
        return shards_at_once(context.get("ti"), limited, self.max_active_tis_per_dagrun, self.max_active_tis_per_dag)

    @cached_property
    def hook(self) -> AgentChatHook:
        from airflow_agentchat.hooks.agent_chat import AgentChatHook

        return AgentChatHook(
            self.agentchat_conn_id,
            timeout=self.timeout,
            max_retries=self.max_retries,
            max_connections=self.max_concurrency,
            before_attempt=self._before_attempt,  # every attempt takes a request slot, never a pause
            limit_share=self._shards,
        )

    async def _before_attempt(self, attempt: int) -> None:
        await self.gate.before_attempt(attempt)

    def resolve_output_path(self) -> str:
        if self.output_path:
            return str(self.output_path)
        if self.input_path:
            text = str(self.input_path)
            stem = text[: -len(".jsonl")] if text.endswith(".jsonl") else text
            return f"{stem}.results.jsonl"
        raise ValueError("output_path is required when prompts are given inline")

    def execute(self, context: Context) -> dict[str, Any]:
        import time

        from airflow_agentchat.batch.store import ResultStore

        started = time.monotonic()
        if (self.prompts is None) == (self.input_path is None):
            raise ValueError("give exactly one of prompts or input_path")
        # Templated limits arrive as text ("{{ params.rpm }}"): numbers from here on.
        self.requests_per_minute = rules.rate_limit("requests_per_minute", self.requests_per_minute)
        self.tokens_per_minute = rules.rate_limit("tokens_per_minute", self.tokens_per_minute)
        self._shards = self.shards_at_once(context)  # before the gate exists: it paces at this shard's share
        self.__dict__.pop("hook", None)  # made again with this share of the connection's limit
        shared = self.body_params()
        spec, build_request = self._output_spec()
        self._check_shared(shared, spec)
        from airflow_agentchat.spend import Budget

        prices = self.prices()
        Budget(self.max_total_tokens, self.max_cost, prices)  # max_cost without prices fails here, before any request
        ti = context.get("ti")
        owner = {key: getattr(ti, key, None) for key in ("dag_id", "task_id", "run_id", "map_index", "try_number")}
        store = ResultStore(
            self.resolve_output_path(),
            flush_every=self.flush_every,
            flush_interval=self.flush_interval,
            owner=owner,
            conn_id=self.storage_conn_id or None,
        )
        store.open()  # before anything is paid for: the output is writable and no other live run holds it
        try:
            return self._execute(context, store, shared, spec, build_request, started, prices)
        finally:
            store.release()

    def _execute(
        self,
        context: Context,
        store: Any,
        shared: dict[str, Any],
        spec: Any,
        build_request: Any,
        started: float,
        prices: Any,
    ) -> dict[str, Any]:
        import time

        from airflow_agentchat.batch.items import InputStats, count_jsonl, iter_jsonl, parse_prompts, prepare
        from airflow_agentchat.batch.lanes import answered_by, open_lanes, starting_budget
        from airflow_agentchat.batch.runner import BatchRunner, run_coroutine
        from airflow_agentchat.batch.store import to_path
        from airflow_agentchat.batch.summary import run_summary
        from airflow_agentchat.exceptions import AgentChatError
        from airflow_agentchat.models import DEFAULT_MODEL
        from airflow_agentchat.spend import BudgetExhaustedError

        schema = spec.schema if spec is not None else None
        self._lanes = lanes = open_lanes(self, context, schema)  # every connection read before anything is sent
        scan = store.scan(retry_failed=self.retry_failed)
        budget = starting_budget(self, lanes, scan)
        if scan.lines:
            self.log.info(
                "Resuming %s: %d ids already recorded (%d failed ones will be sent again), %d parts",
                store.output,
                len(scan.done) + scan.retrying,
                scan.retrying,
                scan.parts,
            )
        if self.prompts is not None:
            values: Any = parse_prompts(self.prompts)
            total = len(values)
            again = lambda: values  # noqa: E731
        else:
            source = to_path(self.input_path, self.storage_conn_id or None)
            total = count_jsonl(source)
            values = iter_jsonl(source)
            again = lambda: iter_jsonl(source)  # noqa: E731

        settings = self.hook.settings  # resolve the connection now, outside the event loop
        self.log.info(
            "Batch of %d items to %s -> %s: max_concurrency=%d, requests_per_minute=%s, tokens_per_minute=%s "
            "(the agent's limits; this task's share: 1/%d)",
            total,
            settings.base_url,
            store.output,
            self.max_concurrency,
            self.requests_per_minute,
            self.tokens_per_minute,
            self._shards,
        )

        items = partial(prepare, build_request=build_request, system_prompt=self.system_prompt, shared=shared)
        cache = lanes[0].cache
        forecast = None
        if self.forecast:
            from airflow_agentchat.batch.forecast import forecast_run

            work = items(again(), skip=scan.done, stats=InputStats())
            forecast = forecast_run(self.forecast, work, scan, budget, cache, log=self.log, ti=context.get("ti"))
            if self.forecast == "only":
                return {"output_path": str(store.output), "sent": 0, "forecast": forecast.as_dict()}
        input_stats = InputStats()
        work = items(values, skip=scan.done, stats=input_stats)
        runner = BatchRunner(
            lanes,
            store,
            max_concurrency=self.max_concurrency,
            include_response=self.include_response,
            progress_interval=self.progress_interval,
            log=self.log,
            secret=settings.api_key,
            spec=spec,
            budget=budget,
        )
        self._facts = {"host": settings.base_url, "input": self.input_path, "output": str(self.resolve_output_path())}
        run = run_coroutine(self._run(runner, work, total, len(scan.done)))
        composed = store.compose()
        elapsed = time.monotonic() - started
        summary = run_summary(
            store.output,
            composed,
            run,
            input_stats,
            elapsed,
            total,
            prices=prices,
            budget=budget,
            forecast=forecast,
            rate_share={
                "shards_at_once": self._shards,
                "requests_per_minute": self.gate.requests_per_minute,
                "tokens_per_minute": self.gate.tokens_per_minute,
                "connection_requests_per_minute": settings.limits.requests_per_minute,
                "connection_tokens_per_minute": settings.limits.tokens_per_minute,
                "shared_backend": settings.limits.backend_conn_id,
            },
            failover=len(lanes) > 1 and any(lane.prices.known for lane in lanes),
        )
        self._facts.update(
            model=shared.get("model") or settings.model or DEFAULT_MODEL,  # what every request named
            usage=summary["usage"],
            requests=run.requests,
            attempts=run.attempts,
            errors=composed.error_types,
            cost=summary.get("cost"),
            **answered_by(composed.connections),
        )
        self.log.info("Batch summary: %s", summary)
        # Usage and cost first: they reach XCom even when the task fails below.
        self._push_spend(context, summary["usage"], summary.get("cost"))
        if budget.exhausted:
            message = (
                f"Budget exhausted: {budget.describe()}; {summary['not_sent']} items not sent (a rerun with a larger "
                f"budget sends them). {composed.total} results are in {store.output}."
            )
            if not run.sent:  # nothing fitted: say why, the estimate is not visible anywhere else
                message += (
                    " No request fitted: each reserves its prompt estimate plus a completion estimate (64 tokens "
                    "before the first answer, then the mean answer; max_tokens when smaller). Set max_tokens or "
                    "raise the budget."
                )
            if self.on_budget_exhausted == "fail":
                context["ti"].xcom_push(key="summary", value=summary)
                raise BudgetExhaustedError(message)
            self.log.warning("%s on_budget_exhausted='succeed': the task succeeds.", message)
        fraction = composed.failed / composed.total if composed.total else 0.0
        if fraction > self.max_failed_fraction:
            context["ti"].xcom_push(key="summary", value=summary)
            raise AgentChatError(
                f"{composed.failed} of {composed.total} items failed ({fraction:.1%}, more than "
                f"max_failed_fraction={self.max_failed_fraction:.1%}); every result, errors included, is in "
                f"{store.output}. Error types: {composed.error_types}."
            )
        return summary

    @staticmethod
    def _check_shared(shared: dict[str, Any], spec: Any) -> None:
        """Check the fields every item shares, as fields (with the output schema's additions), once and before
        anything else: a bad temperature fails the task, not every item."""
        from airflow_agentchat.models import build_fields

        build_fields(**(spec.apply([], shared)[1] if spec is not None else shared))

    def _push_spend(self, context: Context, usage: dict[str, Any], cost: float | None) -> None:
        ti = context.get("ti")
        if ti is None:  # executed outside a task (benchmarks, a plain script): the summary is returned anyway
            return
        ti.xcom_push(key="usage", value=usage)
        if cost is not None:
            ti.xcom_push(key="cost", value=cost)

    def _output_spec(self) -> tuple[Any, Any]:
        """The output spec (None without a schema) and the request builder that adds it to every item."""
        from airflow_agentchat.prompt_cache import caching

        build = caching(self.hook.build_request, self.prompt_cache_ttl())  # cache_prompt marks the shared prefix
        if self.output_model is None and self.output_schema is None:
            return None, build
        from airflow_agentchat.request_body import load_json
        from airflow_agentchat.structured_output import OutputSpec

        spec = OutputSpec.build(
            self.output_model or load_json("output_schema", self.output_schema),
            strategy=self.output_strategy,
            retries=self.output_retries,
        )
        return spec, spec.builder(build)

    async def _run(self, runner: Any, work: Any, total: int, resumed: int) -> Any:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        try:
            return await runner.run(work, total=total, resumed=resumed)
        finally:
            self._main = None
            for lane in self._lanes:
                await lane.hook.aclose()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input file (or the upstream XCom) and output file as datasets, and the run facet; never a part file."""
        from airflow_agentchat.lineage import dataset_name, operator_lineage

        facts = self._facts
        inputs = []
        if facts.get("input"):
            inputs.append(dataset_name(facts["input"]))
        elif self._prompts_xcom is not None:
            task_id, key = self._prompts_xcom
            inputs.append(("airflow", f"xcom/{self.dag_id}/{task_id}/{key}"))
        outputs = [dataset_name(facts["output"])] if facts.get("output") else []
        return operator_lineage(facts, inputs, outputs)

    def on_kill(self) -> None:
        """Cancel the batch: requests in flight are dropped, results already received are flushed."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            loop.call_soon_threadsafe(main.cancel)
