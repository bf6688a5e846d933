"""What the single and the batch operator share: the connection, the system prompt and the body fields.

Import-light like the operators themselves (no pydantic, no httpx): requests are validated in ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_agentchat import arguments as rules
from airflow_agentchat.failover import conn_ids
from airflow_agentchat.request_body import BODY_FIELDS, load_json, merge_request

#: Fields that may arrive as JSON text after templating (``"{{ ti.xcom_pull(...) | tojson }}"``). ``stop`` is
#: not one of them: a stop sequence like ``"[/INST]"`` is text.
_FILE_EXT = (".json", ".j2")
_JSON_FIELDS = ("tools", "metadata", "logit_bias", "extra_body", "stream_options", "tool_choice")


class AgentChatRequestOperator(BaseOperator):
    """Base of the agent chat operators: every body field of the reference as a templated keyword.

    :param agentchat_conn_id: the ``agentchat`` connection (templated).
    :param fallback_conn_ids: connections to send the same request to, in order, when the primary's request
        fails for good with an error another agent could answer (templated; see ``docs/failover.md``). Once a
        connection has answered, the rest of the task's conversation (tool and repair rounds) stays on it.
    :param system_prompt: a system message put first (templated).
    :param timeout: read timeout in seconds for this task (overrides the connection).
    :param max_retries: retries for this task (overrides the connection).
    :param max_total_tokens: stop sending when the task's tokens (all rounds, runs and tries) would pass this.
    :param max_cost: the same in money, priced by the connection's ``prompt_token_price`` /
        ``completion_token_price`` extras (per million tokens). See ``docs/operations.md``.
    :param cache_prompt: ``"5m"`` or ``"1h"``: mark the shared prefix (system prompt, output-schema instruction)
        with ``cache_control`` so the agent caches it for that long (templated; default None: no marking). See
        ``docs/content-parts.md``.
    :param on_budget_exhausted: when a request would pass a budget (it is not sent) or an answer took the spend
        past it: ``"fail"`` (default) fails the task, ``"succeed"`` logs a warning and ends it successfully;
        usage and cost reach XCom first either way.

    The other keywords are the reference's body fields (``model``, ``temperature``, ``top_p``, ``n``,
    ``stop``, ``max_tokens``, ``max_completion_tokens``, ``tools``, ``tool_choice``, ``metadata``, ...), the
    DigitalOcean extras (``include_retrieval_info``, ``include_functions_info``, ``include_guardrails_info``,
    ``provide_citations``) and ``extra_body``; :class:`airflow_agentchat.models.ChatCompletionRequest` holds
    each one's description and rules.
    """

    template_fields: Sequence[str] = (
        "system_prompt",
        "agentchat_conn_id",
        "fallback_conn_ids",
        "cache_prompt",
        *BODY_FIELDS,
    )
    # Empty: Airflow would load any templated string ending in an extension as a file, upstream data included
    # (a mapped value "{{ conn.x.password }} notes.json" would be rendered). Only the DAG author's values of
    # ``template_file_fields`` name files, and only files that exist in the template search path.
    template_ext: Sequence[str] = ()
    template_file_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        agentchat_conn_id: str = "agentchat_default",
        fallback_conn_ids: Sequence[str] | str | None = None,
        system_prompt: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        model: str | None = None,
        stream: bool | None = None,
        stream_options: Mapping[str, Any] | None = None,
        stop: str | Sequence[str] | None = None,
        n: int | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        logit_bias: Mapping[str, int] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        reasoning_effort: str | None = None,
        seed: int | None = None,
        user: str | None = None,
        include_retrieval_info: bool | None = None,
        include_functions_info: bool | None = None,
        include_guardrails_info: bool | None = None,
        provide_citations: bool | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_total_tokens: int | None = None,
        max_cost: float | None = None,
        cache_prompt: str | None = None,
        on_budget_exhausted: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        values = locals()
        from airflow_agentchat.spend import check_limits  # no pydantic, no HTTP: cheap at parse time

        check_limits(max_total_tokens, max_cost, on_budget_exhausted)
        rules.at_parse("cache_prompt", rules.cache_prompt(cache_prompt))
        self.cache_prompt = cache_prompt
        self.on_budget_exhausted = on_budget_exhausted
        self.max_total_tokens = max_total_tokens
        self.max_cost = max_cost
        self.agentchat_conn_id = agentchat_conn_id
        if not isinstance(fallback_conn_ids, str) or "{{" not in fallback_conn_ids:
            conn_ids(agentchat_conn_id, fallback_conn_ids)  # a bad value fails at parse time
        self.fallback_conn_ids = fallback_conn_ids
        self.answered_by: str | None = None  # the connection that answered this task (set by the first answer)
        self.system_prompt = system_prompt
        self.timeout = timeout
        self.max_retries = max_retries
        for name in BODY_FIELDS:
            setattr(self, name, values[name])

    def resolve_template_files(self) -> None:
        """Load the template files the DAG author named in ``template_file_fields`` (parse time)."""
        for field in self.template_file_fields:
            value = getattr(self, field, None)
            if isinstance(value, str) and value.endswith(_FILE_EXT):
                source = _template_file(value, self.get_template_env())
                if source is not None:
                    setattr(self, field, source)
                elif not value.lstrip().startswith(("{", "[")):
                    self.log.warning("%s=%r names no file in the template search path: used as text", field, value)
        self.prepare_template()

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """Render like Airflow (upstream data, in ``seen_oids``, stays as it is); a file field of a mapped task
        (``.partial(messages="x.json.j2")``, not loaded at parse time) renders its file."""
        if (
            isinstance(content, str)
            and not (seen_oids and id(content) in seen_oids)
            and any(content is getattr(self, field, None) for field in self.template_file_fields)
        ):
            jinja_env = jinja_env or self.get_template_env()
            if _template_file(content, jinja_env) is not None:
                return self._render(jinja_env.get_template(content), context)
        return super().render_template(content, context, jinja_env, seen_oids)

    def _send_now(self, request: Any) -> Any:
        """Send through the connection that answered this task, or else the primary and then each fallback.

        The first answer fixes the connection for the rest of the task: tool and repair rounds carry the
        conversation so far, and only the agent that held it continues it. Failures that no other agent would
        answer differently are raised at once (:func:`airflow_agentchat.failover.fails_over`).
        """
        from airflow_agentchat.failover import fails_over

        order = [self.answered_by] if self.answered_by else self.conn_ids()
        for position, conn_id in enumerate(order):
            if position:
                self._use_connection(conn_id)
            try:
                completion = self._send_one(request)
            except Exception as exc:
                if position + 1 == len(order) or getattr(self, "_stop_requested", False) or not fails_over(exc):
                    raise
                self.log.warning("Connection %r failed for good (%s); sending to %r", conn_id, exc, order[position + 1])
                if (spend := getattr(self, "_spend", None)) is not None:  # counted under its own connection
                    spend.failed(exc, None)
                continue
            self.answered_by = conn_id
            if self.fallback_conn_ids:  # XCom says which connection answered when more than one could
                completion._meta["conn_id"] = conn_id
            return completion
        raise AssertionError("unreachable: the last connection's error is raised")

    def conn_ids(self) -> list[str]:
        """The (rendered) primary connection, then the fallbacks, each once."""
        return conn_ids(self.agentchat_conn_id, self.fallback_conn_ids)

    def answered(self, meta: Mapping[str, Any] | None) -> dict[str, Any]:
        """Take over the connection the trigger's answer came from (its ``meta``); returns that meta."""
        meta = dict(meta or {})
        conn_id = meta.get("conn_id") or self.agentchat_conn_id
        if conn_id != self.agentchat_conn_id:
            self._use_connection(conn_id)
        self.answered_by = conn_id
        if not self.fallback_conn_ids:  # as on the direct path: XCom names the connection when more than one could
            meta.pop("conn_id", None)
        return meta

    def _send_one(self, request: Any) -> Any:
        """Send ``request`` through ``self.hook`` (the operator defines it)."""
        raise NotImplementedError

    def _use_connection(self, conn_id: str) -> None:
        """Make ``conn_id`` this task's connection: its hook, its prices and budget pricing, its metrics tag."""
        from airflow_agentchat.hooks.agent_chat import AgentChatHook

        previous = self.__dict__.get("hook")
        if previous is not None:
            previous.close()
        hook = AgentChatHook(conn_id, timeout=self.timeout, max_retries=self.max_retries)
        self.__dict__["hook"] = hook
        spend = getattr(self, "_spend", None)
        if spend is not None:
            spend.prices = spend.budget.prices = hook.settings.prices
            if spend.metrics is not None:
                spend.metrics.use_connection(conn_id)

    def prices(self) -> Any:
        """The connection's token prices (:class:`~airflow_agentchat.spend.Prices`; unknown when not set)."""
        return self.hook.settings.prices  # type: ignore[attr-defined]

    def prompt_cache_ttl(self) -> str | None:
        """The rendered ``cache_prompt`` (``InvalidRequestError`` naming it when a template gave something else)."""
        value = self.cache_prompt or None
        if (problem := rules.cache_prompt(value)) is not None or (value is not None and "{{" in value):
            from airflow_agentchat.exceptions import InvalidRequestError

            raise InvalidRequestError([("cache_prompt", problem or f"must be '5m' or '1h', got {value!r}")])
        return value

    def body_params(self, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The rendered body fields as ``hook.build_request`` keywords, over an optional request body."""
        explicit = {name: getattr(self, name) for name in BODY_FIELDS}
        for name in _JSON_FIELDS:
            value = explicit[name]
            if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
                explicit[name] = load_json(name, value)
        return merge_request(request, explicit)


def _template_file(value: Any, env: Any) -> str | None:
    """The source of the ``.json`` / ``.j2`` template file ``value`` names, or None when the search path has none."""
    if not isinstance(value, str) or not value.endswith(_FILE_EXT) or env.loader is None:
        return None
    from jinja2 import TemplateNotFound

    try:
        return env.loader.get_source(env, value)[0]
    except (TemplateNotFound, OSError, ValueError):
        return None
