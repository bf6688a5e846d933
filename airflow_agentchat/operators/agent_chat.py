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

Output = Literal["text", "message", "response"]
_OUTPUTS = ("text", "message", "response")
_FILE_FIELDS = ("messages", "request")  # the fields that may name a .json / .j2 template file


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

    :param prompt: the user message to send (templated).
    :param system_prompt: a system message put first (templated).
    :param messages: the conversation so far: a list of message dicts or a ``.json``/``.j2`` file (templated).
    :param request: a whole request body (templated; dict or ``.json``/``.j2`` file).
    :param output: what ``return_value`` holds: ``"text"``, ``"message"`` or ``"response"``.
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

    template_fields: Sequence[str] = ("prompt", "messages", "request", *AgentChatRequestOperator.template_fields)
    template_ext: Sequence[str] = (".json", ".j2")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "messages": "json",
        "request": "json",
        "tools": "json",
        "extra_body": "json",
        "metadata": "json",
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
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
        self.prompt = prompt
        self.messages = messages
        self.request = request
        self.output_mode = output  # `output` is taken: BaseOperator.output is the XComArg
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

    def execute(self, context: Context) -> Any:
        messages, params = self.build_body()
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
        completion = self._stream(request) if request.stream else self.hook.send(request)
        return self._publish(completion, context, started)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: check the event, then publish like a direct run."""
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
        return self._publish(completion, context, None)

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

    def _publish(self, completion: ChatCompletion, context: Context, started: float | None) -> Any:
        usage = completion.usage_dict()
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
