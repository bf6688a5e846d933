"""AgentChatCompletionOperator: one conversation with an agent, its answer and token usage in XCom.

Module import stays cheap (no pydantic models, no httpx client): the hook, the models and the trigger are
imported in ``execute``, because DAG files are parsed far more often than tasks run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_agentchat.operators.base import AgentChatRequestOperator
from airflow_agentchat.operators.request_parts import compose_messages, load_json

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.structured_output import OutputSpec

Output = Literal["text", "message", "response"]
_OUTPUTS = ("text", "message", "response")
_FILE_FIELDS = ("messages", "request", "output_schema")  # the fields that may name a .json / .j2 template file
_STRATEGIES = ("auto", "tool", "json")  # structured_output.STRATEGIES, repeated to keep it out of DAG parsing


class AgentChatCompletionOperator(AgentChatRequestOperator):
    """Send one chat completion request through an ``agentchat`` connection and push the answer to XCom.

    The conversation is ``system_prompt`` + ``messages`` (or the ``request``'s messages) + ``prompt`` as the
    last user message. Every body field of the reference is a keyword argument; ``request`` takes a whole
    request body as the reference shows it (a dict, or a ``.json`` / ``.j2`` template file rendered with the
    task context) and explicit keywords override its fields. Everything is validated before a request is
    sent, and a bad field fails the task with an error that names it.

    XCom: ``return_value`` is the answer text (a list for ``n > 1``), the first choice's message with
    ``output="message"`` or the whole response with ``output="response"``; key ``response`` always holds
    the full response and key ``usage`` the token counts.

    With ``output_schema`` (a pydantic model class or a JSON Schema dict / ``.json`` file), ``return_value``
    is the answer validated against it, as JSON data (``model_dump(mode="json")`` for a model); an invalid
    answer is sent back to the agent with the errors up to ``output_retries`` times, and ``usage`` counts every
    round. See ``docs/output-schemas.md``.

    :param prompt: the user message to send (templated).
    :param system_prompt: a system message put first (templated).
    :param messages: the conversation so far: a list of message dicts or a ``.json``/``.j2`` file (templated).
    :param request: a whole request body (templated; dict or ``.json``/``.j2`` file).
    :param output: what ``return_value`` holds: ``"text"``, ``"message"`` or ``"response"``.
    :param output_schema: the shape of the answer: a pydantic model class or a JSON Schema dict (templated; a
        ``.json`` / ``.j2`` file or JSON text works too). The top must be an object.
    :param output_strategy: how the schema travels: ``"tool"`` (a forced function call), ``"json"`` (an
        instruction, the value read from the text) or ``"auto"`` (tool, accepting JSON text as a fallback).
    :param output_retries: repair rounds after an invalid answer (default 2).
    :param stream: stream the answer and log it as it arrives (buffered into readable lines).
    :param deferrable: wait for the answer in the triggerer instead of holding a worker slot (default:
        ``[operators] default_deferrable``). Streaming requests always run in the worker.
    :param agentchat_conn_id: the ``agentchat`` connection (templated).
    :param timeout: read timeout in seconds for this task (overrides the connection).
    :param max_retries: retries for this task (overrides the connection).

    The remaining keywords are the reference's body fields (``model``, ``temperature``, ``top_p``, ``n``,
    ``stop``, ``max_tokens``, ``max_completion_tokens``, ``tools``, ``tool_choice``, ``metadata``, ...),
    the DigitalOcean extras (``include_retrieval_info``, ``include_functions_info``,
    ``include_guardrails_info``, ``provide_citations``) and ``extra_body``; see
    :class:`airflow_agentchat.models.ChatCompletionRequest` for each one's rules.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "messages",
        "request",
        "output_schema",
        *AgentChatRequestOperator.template_fields,
    )
    template_ext: Sequence[str] = (".json", ".j2")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "messages": "json",
        "request": "json",
        "tools": "json",
        "extra_body": "json",
        "metadata": "json",
        "output_schema": "json",
        "prompt": "md",
        "system_prompt": "md",
    }
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | str | None = None,
        request: Mapping[str, Any] | str | None = None,
        output: Output = "text",
        output_schema: type | Mapping[str, Any] | str | None = None,
        output_strategy: Literal["auto", "tool", "json"] = "auto",
        output_retries: int = 2,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
        if output_strategy not in _STRATEGIES:
            raise ValueError(f"output_strategy must be one of {', '.join(_STRATEGIES)}, got {output_strategy!r}")
        if not isinstance(output_retries, int) or isinstance(output_retries, bool) or output_retries < 0:
            raise ValueError(f"output_retries must be a whole number >= 0, got {output_retries!r}")
        if output_schema is not None and output != "text":
            raise ValueError("output_schema sets return_value to the validated value: leave output at 'text'")
        self.prompt = prompt
        self.messages = messages
        self.request = request
        self.output_mode = output  # `output` is taken: BaseOperator.output is the XComArg
        # A model class stays out of template_fields: Airflow "renders" a callable by calling it.
        self.output_model = output_schema if isinstance(output_schema, type) else None
        self.output_schema = None if self.output_model is not None else output_schema
        self.output_strategy = output_strategy
        self.output_retries = output_retries
        if deferrable is None:
            from airflow.sdk.configuration import conf

            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable

    def resolve_template_files(self) -> None:
        """Only ``messages`` and ``request`` name template files: a prompt ending in ".json" is text."""
        for field in _FILE_FIELDS:
            value = getattr(self, field, None)
            if isinstance(value, str) and value.endswith(tuple(self.template_ext)):
                env = self.get_template_env()
                try:
                    setattr(self, field, env.loader.get_source(env, value)[0])  # type: ignore[union-attr]
                except Exception:
                    self.log.exception("Failed to resolve template file %r of %s", value, field)
        self.prepare_template()

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """Render like Airflow does, except that only ``messages`` / ``request`` values load files."""
        if (
            isinstance(content, str)
            and content.endswith(tuple(self.template_ext))
            and all(content is not getattr(self, field, None) for field in _FILE_FIELDS)
        ):
            jinja_env = jinja_env or self.get_template_env()
            return self._render(jinja_env.from_string(content), context)
        return super().render_template(content, context, jinja_env, seen_oids)

    @cached_property
    def hook(self) -> AgentChatHook:
        from airflow_agentchat.hooks.agent_chat import AgentChatHook

        return AgentChatHook(self.agentchat_conn_id, timeout=self.timeout, max_retries=self.max_retries)

    def build_body(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Messages and body fields from the (rendered) arguments; the hook validates them."""
        request = load_json("request", self.request)
        if request is not None and not isinstance(request, Mapping):
            from airflow_agentchat.exceptions import InvalidRequestError

            raise InvalidRequestError([("request", "must be a JSON object (a request body)")])
        messages = load_json("messages", self.messages)
        if messages is None and request is not None:
            messages = request.get("messages")
        params = self.body_params(request)
        return compose_messages(prompt=self.prompt, system_prompt=self.system_prompt, messages=messages), params

    def output_spec(self) -> OutputSpec | None:
        """The checked output schema (None without one); raises ``InvalidRequestError`` before any request."""
        if self.output_model is None and self.output_schema is None:
            return None
        from airflow_agentchat.structured_output import OutputSpec

        schema = self.output_model or load_json("output_schema", self.output_schema)
        return OutputSpec.build(schema, strategy=self.output_strategy, retries=self.output_retries)

    def prepare(self) -> tuple[list[dict[str, Any]], dict[str, Any], OutputSpec | None]:
        """Messages, body fields and output spec of this task, all checked before anything is sent."""
        messages, params = self.build_body()
        spec = self.output_spec()
        if spec is not None:
            messages, params = spec.apply(messages, params)
        return messages, params, spec

    def execute(self, context: Context) -> Any:
        messages, params, spec = self.prepare()
        request = self.hook.build_request(messages, **params)
        if self.deferrable and not request.stream:
            from airflow_agentchat.triggers.agent_chat import AgentChatCompletionTrigger

            self.defer(
                trigger=AgentChatCompletionTrigger(
                    agentchat_conn_id=self.agentchat_conn_id,
                    body=request.model_dump(mode="json", exclude_unset=True),
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                ),
                method_name="execute_complete",
            )
        started = time.perf_counter()
        completion = self._send(request)
        if spec is not None:
            return self._structured(spec, messages, params, completion, context, started)
        return self._publish(completion, context, started)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: check the event, then publish like a direct run.

        With an output schema, repair rounds (if the answer is invalid) run here, in the worker.
        """
        from airflow_agentchat.exceptions import AgentChatError
        from airflow_agentchat.models import ChatCompletion

        if not isinstance(event, dict) or event.get("status") not in ("success", "error"):
            raise AgentChatError(f"Unexpected trigger event: {str(event)[:200]}")
        if event["status"] == "error":
            if isinstance(event.get("error"), dict):
                raise AgentChatError.from_dict(event["error"])  # the class direct mode would raise
            raise AgentChatError(event.get("message") or "agent chat request failed in the triggerer")
        completion = ChatCompletion.model_validate(event["response"])
        completion._meta = dict(event.get("meta") or {})
        spec = self.output_spec()
        if spec is None:
            return self._publish(completion, context, None)
        messages, params = spec.apply(*self.build_body())
        return self._structured(spec, messages, params, completion, context, None)

    def _send(self, request: Any) -> ChatCompletion:
        return self._stream(request) if request.stream else self.hook.send(request)

    def _structured(
        self,
        spec: OutputSpec,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        completion: ChatCompletion,
        context: Context,
        started: float | None,
    ) -> Any:
        """Validate the answer; send the errors back until it is valid or ``output_retries`` are spent."""
        from airflow_agentchat.structured_output import add_usage, message_of

        usage = add_usage({}, completion.usage_dict())
        rounds = 1
        while True:
            message = message_of(completion)
            outcome = spec.parse(message)
            if outcome.ok:
                break
            if rounds > spec.retries:
                self._publish(completion, context, started, usage=usage)
                raise spec.failure(outcome, rounds, usage, self.hook.settings.api_key)
            self.log.warning(
                "Answer %d does not match the output schema (%s); sending the errors back (repair %d of %d)",
                rounds,
                outcome.redacted(self.hook.settings.api_key).describe(3),
                rounds,
                spec.retries,
            )
            messages = [*messages, *spec.repair_messages(message, outcome)]
            completion = self._send(self.hook.build_request(messages, **params))
            add_usage(usage, completion.usage_dict())
            rounds += 1
        self.log.info(
            "Output valid after %d round(s) (%s strategy, from the %s)", rounds, spec.strategy, outcome.source
        )
        self._publish(completion, context, started, usage=usage)
        return self.output_value(outcome.value, context)

    def output_value(self, value: Any, context: Context) -> Any:
        """What ``return_value`` holds for a validated value (the branch operator branches here)."""
        return value

    def _stream(self, request: Any) -> ChatCompletion:
        """Log the answer as it arrives, one readable line at a time, and fold the chunks."""
        from airflow_agentchat.streaming import ChunkFolder

        folder = ChunkFolder()
        line: list[str] = []
        for chunk in self.hook.stream(request):
            folder.add(chunk)
            *complete, rest = chunk.text.split("\n")
            for part in complete:
                self.log.info("│ %s", "".join(line) + part)
                line = []
            line.append(rest)
            if sum(map(len, line)) > 160:
                self.log.info("│ %s", "".join(line))
                line = []
        if "".join(line):
            self.log.info("│ %s", "".join(line))
        return folder.result()

    def _publish(
        self, completion: ChatCompletion, context: Context, started: float | None, *, usage: dict | None = None
    ) -> Any:
        usage = usage if usage is not None else completion.usage_dict()
        latency_ms = completion.meta.get("latency_ms")
        if latency_ms is None and started is not None:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
        meta = completion.meta
        finish = ",".join(sorted({str(c.finish_reason) for c in completion.choices})) or "none"
        self.log.info(
            "Agent chat completion: %s prompt + %s completion = %s tokens, %s ms, finish_reason=%s, choices=%d%s",
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            usage.get("total_tokens", 0),
            latency_ms,
            finish,
            len(completion.choices),
            "".join(f", {key}={meta[key]}" for key in ("attempts", "request_id") if meta.get(key) is not None),
        )
        response = completion.to_dict()
        ti = context["ti"]
        ti.xcom_push(key="response", value=response)
        ti.xcom_push(key="usage", value=usage)
        if self.output_mode == "response":
            return response
        choices = sorted(response.get("choices", []), key=lambda c: c.get("index", 0))
        if self.output_mode == "message":
            from airflow_agentchat.models import as_request_message

            # Ready to send back (tool round trips): only the fields a request message may carry.
            values = [as_request_message(choice.get("message", {})) for choice in choices]
        else:
            values = [choice.get("message", {}).get("content") for choice in choices]
        return values if len(values) > 1 else (values[0] if values else None)

    def on_kill(self) -> None:
        """Close the connection in flight, so a killed task stops waiting for (and paying for) the answer."""
        if "hook" in self.__dict__:
            self.hook.cancel()
