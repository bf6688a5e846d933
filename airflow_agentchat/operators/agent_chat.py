"""AgentChatCompletionOperator: one conversation with an agent, its answer and token usage in XCom.

Module import stays cheap (no pydantic models, no httpx client): the hook, the models and the trigger are
imported in ``execute``, because DAG files are parsed far more often than tasks run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_agentchat import arguments as rules
from airflow_agentchat.compat import check_features
from airflow_agentchat.operators.media import AgentChatPromptOperator
from airflow_agentchat.request_body import compose_messages, load_json

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.operators.answer import TaskSpend
    from airflow_agentchat.operators.task_state import RoundState
    from airflow_agentchat.structured_output import OutputSpec
    from airflow_agentchat.tools import Toolbox

Output = Literal["text", "message", "response"]


class AgentChatCompletionOperator(AgentChatPromptOperator):
    """Send one chat completion request through an ``agentchat`` connection and push the answer to XCom.

    The conversation is ``system_prompt`` + ``messages`` (or the ``request``'s) + ``prompt`` as the last user
    message; everything is validated before a request is sent, and a bad field fails the task naming it. XCom:
    ``return_value`` (see ``output``), ``response`` (the full response), ``usage`` and, with prices on the
    connection, ``cost``, pushed even when the task fails after paid requests. The tool, repair and review
    loop is :class:`~airflow_agentchat.operators.conversation.Conversation`. See ``docs/operations.md`` (spend),
    ``docs/output-schemas.md`` and ``docs/tools-and-approval.md``.

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
    :param tools: tool dicts of the reference and/or Python functions. The provider runs the loop for the
        functions: it validates the agent's arguments, calls them, sends the results back and asks again
        until a final answer; XCom key ``tool_trace`` lists every call. See ``docs/tools-and-approval.md``.
    :param max_tool_rounds: rounds of tool calls allowed before the task fails (default 8).
    :param max_tool_calls_per_round: tool calls one answer may ask for (default 64); an answer asking for more
        fails the task before any of them runs.
    :param tool_errors: ``"return"`` (default) sends a function's exception to the agent as its result;
        ``"raise"`` fails the task.
    :param require_approval: a person approves, edits or rejects the final answer in Airflow's
        human-in-the-loop before the task succeeds (templated: ``True``/``False`` or the texts
        ``"true"``/``"false"``).
    :param approval_timeout: how long to wait for the review (a ``timedelta`` or seconds; default: forever).
    :param approval_default: ``"approve"`` or ``"reject"`` when the timeout passes; without it the task fails.
    :param stream: stream the answer and log it as it arrives (buffered into readable lines).
    :param deferrable: wait in the triggerer, not a worker slot (default ``[operators] default_deferrable``);
        streaming requests always run in the worker.
    :param agentchat_conn_id: the ``agentchat`` connection (templated); ``timeout`` (read timeout, seconds) and
        ``max_retries`` override the connection's for this task.

    The remaining keywords are the reference's body fields (``model``, ``temperature``, ``top_p``, ``n``,
    ``stop``, ``max_tokens``, ``max_completion_tokens``, ``tools``, ``tool_choice``, ``metadata``, ...),
    the DigitalOcean extras (``include_retrieval_info``, ``include_functions_info``,
    ``include_guardrails_info``, ``provide_citations``) and ``extra_body``; see
    :class:`airflow_agentchat.models.ChatCompletionRequest` for each one's rules.
    """

    template_fields: Sequence[str] = ("prompt", "messages", "request", "output_schema", "require_approval")
    template_fields = (*template_fields, *AgentChatPromptOperator.template_fields)
    template_file_fields: Sequence[str] = ("messages", "request", "output_schema")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("messages", "request", "tools", "extra_body", "metadata", "output_schema"), "json"),
        **dict.fromkeys(("prompt", "system_prompt"), "md"),
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
        tools: Sequence[Mapping[str, Any] | Callable[..., Any]] | str | None = None,
        max_tool_rounds: int = 8,
        max_tool_calls_per_round: int = 64,
        tool_errors: Literal["return", "raise"] = "return",
        require_approval: bool | str = False,
        approval_timeout: timedelta | float | None = None,
        approval_default: Literal["approve", "reject"] | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        # Functions stay out of the templated ``tools`` field: Airflow calls callables when it renders one.
        python_tools: list[Callable[..., Any]] = []
        if isinstance(tools, list | tuple):
            python_tools = [tool for tool in tools if callable(tool) and not isinstance(tool, Mapping)]
            names = [rules.tool_name(tool) for tool in python_tools]
            if len(set(names)) != len(names):
                raise ValueError(f"two Python tools have the same name: {sorted(names)}")
            tools = [tool for tool in tools if not (callable(tool) and not isinstance(tool, Mapping))] or None
        super().__init__(tools=tools, **kwargs)  # the functions were taken out
        rules.at_parse("max_tool_rounds", rules.whole_number(max_tool_rounds, 1))
        rules.at_parse("max_tool_calls_per_round", rules.whole_number(max_tool_calls_per_round, 1))
        rules.at_parse("tool_errors", rules.one_of(tool_errors, rules.TOOL_ERRORS))
        rules.at_parse("approval_default", rules.approval_default(approval_default))
        rules.at_parse("output", rules.one_of(output, rules.OUTPUTS))
        rules.at_parse("output_strategy", rules.output_strategy(output_strategy))
        rules.at_parse("output_retries", rules.output_retries(output_retries))
        if output_schema is not None and output != "text":
            raise ValueError("output_schema sets return_value to the validated value: leave output at 'text'")
        if review := rules.flag(require_approval):
            rules.refuse(rules.review_problems(output, kwargs.get("n")))
        keeps_state = bool(python_tools or require_approval or self.max_total_tokens or self.max_cost)
        check_features(self.task_id, review=bool(review), keeps_state=keeps_state, logger=self.log)
        self.python_tools, self.tool_errors = python_tools, tool_errors
        self.max_tool_rounds, self.max_tool_calls_per_round = max_tool_rounds, max_tool_calls_per_round
        self.require_approval, self.approval_default = require_approval, approval_default
        self.approval_timeout = rules.approval_timeout(approval_timeout)
        self._stop_requested = False  # set by on_kill (SIGTERM): the tool loop stops before its next call
        self._spend: TaskSpend | None = None  # this try's budget and usage, from execute on
        self.prompt, self.messages, self.request = prompt, messages, request
        self.output_mode = output  # `output` is taken: BaseOperator.output is the XComArg
        # A model class stays out of template_fields: Airflow "renders" a callable by calling it.
        self.output_model = output_schema if isinstance(output_schema, type) else None
        self.output_schema = None if self.output_model is not None else output_schema
        self.output_strategy, self.output_retries = output_strategy, output_retries
        if deferrable is None:
            from airflow_agentchat.compat import conf

            deferrable = conf().getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable

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

    @cached_property
    def toolbox(self) -> Toolbox | None:
        """The Python tools, built (schemas, validators) on first use in ``execute``; None without any."""
        if not self.python_tools:
            return None
        from airflow_agentchat.tools import Toolbox

        tools = load_json("tools", getattr(self, "tools", None)) or ()
        others = [(tool.get("function") or {}).get("name") for tool in tools if isinstance(tool, Mapping)]
        secret = self.hook.settings.api_key
        return Toolbox(
            self.python_tools, other_names=[n for n in others if n], tool_errors=self.tool_errors, secret=secret
        )

    def prepare(self) -> tuple[list[dict[str, Any]], dict[str, Any], OutputSpec | None]:
        """Messages, body fields and output spec of this task, all checked before anything is sent."""
        messages, params = self.build_body()
        toolbox = self.toolbox
        if toolbox is not None:
            params["tools"] = [*(params.get("tools") or []), *toolbox.definitions]
        spec = self.output_spec()
        if spec is not None:
            messages, params = spec.apply(messages, params)
            if toolbox is not None and spec.strategy != "json":
                # Forcing the output tool would leave the agent no way to call the Python tools.
                params["tool_choice"] = "required"
        messages = self.prompt_messages(messages)  # images on the prompt, the shared prefix marked for caching
        if self.approval_required() and (problems := rules.review_problems(self.output_mode, params.get("n"))):
            from airflow_agentchat.exceptions import InvalidRequestError

            raise InvalidRequestError(problems[:1])
        return messages, params, spec

    def approval_required(self) -> bool:
        """``require_approval`` after rendering: a bool, or the texts a template gives (``"True"``, ``"false"``)."""
        value = rules.flag(self.require_approval)
        if value is not None:
            return value
        from airflow_agentchat.exceptions import InvalidRequestError

        raise InvalidRequestError([("require_approval", f"must be true or false, got {self.require_approval!r}")])

    def execute(self, context: Context) -> Any:
        messages, params, spec = self.prepare()
        request = self.hook.build_request(messages, **params)
        spend = self._begin_spend(context)
        state = self._load_state(context, messages, params)
        if state.final is not None:  # an earlier try has the answer; only the review is missing
            return self._review_saved(state, context)
        from airflow_agentchat.operators.answer import paid_for

        started = time.perf_counter()
        with paid_for(context, spend):  # also ends the task per on_budget_exhausted
            if self.deferrable and not (request.stream or state.resumed or self.toolbox or spend.cached(request)):
                from airflow_agentchat.triggers.agent_chat import AgentChatCompletionTrigger

                spend.check(request)  # the triggerer sends it: the budget is checked here
                self.defer(
                    trigger=AgentChatCompletionTrigger(
                        agentchat_conn_id=self.agentchat_conn_id,
                        fallback_conn_ids=self.conn_ids()[1:],
                        body=request.model_dump(mode="json", exclude_unset=True),
                        timeout=self.timeout,
                        max_retries=self.max_retries,
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=self.hook.request_deadline() * len(self.conn_ids())),  # the hooks' bound
                )
            completion = None if state.resumed or self.toolbox is not None else self._send(request)
            return self._converse(spec, messages, params, completion, context, started, state)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: check the event, then go on like a direct run (repairs, review)."""
        from airflow_agentchat.exceptions import AgentChatError
        from airflow_agentchat.models import ChatCompletion
        from airflow_agentchat.operators.answer import paid_for

        if not isinstance(event, dict) or event.get("status") not in ("success", "error"):
            raise AgentChatError(f"Unexpected trigger event: {str(event)[:200]}")
        spend = self._begin_spend(context)
        with paid_for(context, spend):
            if event["status"] == "error":
                error = (
                    AgentChatError.from_dict(event["error"])  # the class direct mode would raise
                    if isinstance(event.get("error"), dict)
                    else AgentChatError(event.get("message") or "agent chat request failed in the triggerer")
                )
                spend.failed(error, None)
                raise error
            completion = ChatCompletion.model_validate(event["response"])
            completion._meta = self.answered(event.get("meta"))  # a fallback may have answered in the trigger
            spend.paid(completion, None)
            messages, params, spec = self.prepare()
            return self._converse(spec, messages, params, completion, context, None)

    def _send(self, request: Any) -> ChatCompletion:
        return self._send_now(request) if self._spend is None else self._spend.send(request, self._send_now)

    def _send_one(self, request: Any) -> ChatCompletion:  # one connection; _send_now fails over (base)
        if not request.stream:
            return self.hook.send(request)
        from airflow_agentchat.operators.answer import fold_logged

        with self.hook.open_stream(request) as (meta, chunks):  # meta: attempts and request id, for the log line
            return fold_logged(chunks, self.log, meta)

    # ------------------------------------------------------------------------------ spend and lineage

    def _begin_spend(self, context: Context) -> TaskSpend:
        """Budget, prices and metrics of this try (earlier tries' spend read from the task state store)."""
        from airflow_agentchat.operators.answer import TaskSpend

        self._spend = TaskSpend(self, context)
        return self._spend

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """No datasets (the conversation is not one); a run facet with endpoint host, model, tokens, errors."""
        from airflow_agentchat.lineage import operator_lineage

        spend = self._spend
        settings = self.hook.settings
        model = getattr(self, "model", None)  # a body field, set from BODY_FIELDS by the base class
        facts = spend.facts(settings.base_url, spend.model or model or settings.model) if spend else {}
        return operator_lineage({**facts, "conn_id": self.answered_by})

    def _converse(
        self,
        spec: OutputSpec | None,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        completion: ChatCompletion | None,
        context: Context,
        started: float | None,
        state: RoundState | None = None,
    ) -> Any:
        """Run the conversation (see ``conversation``) from ``completion`` to the final answer, then deliver it:
        XCom, or the review. What was paid for is published even when the conversation gives up."""
        from airflow_agentchat.operators.conversation import Conversation

        state = state or self._load_state(context, messages, params)
        talk = Conversation(
            state,
            messages,
            params,
            send=lambda msgs, fields: self._send(self.hook.build_request(msgs, **fields)),
            spec=spec,
            toolbox=self.toolbox,
            log=self.log,
            secret=self.hook.settings.api_key,
            max_tool_rounds=self.max_tool_rounds,
            max_tool_calls_per_round=self.max_tool_calls_per_round,
            stopping=lambda: self._stop_requested,
        )
        try:
            final = talk.run(completion)
        except BaseException:
            if talk.gave_up is not None:
                self._push_trace(context, state)
                if talk.gave_up == "invalid_output" and talk.completion is not None:
                    if self._spend is not None:
                        self._spend.invalid_output()
                    self._publish(talk.completion, context, started, usage=state.usage.as_dict())
                else:
                    context["ti"].xcom_push(key="usage", value=state.usage.as_dict())
            raise
        self._push_trace(context, state)
        published = self._publish(final.completion, context, started, usage=state.usage.as_dict())
        structured = final.outcome is not None
        value = final.outcome.value if final.outcome is not None else published
        if not self.approval_required():
            state.clear()
            return self.output_value(value, context) if structured else value
        review = {"value": value, "structured": structured, "message": final.message}
        state.await_review(final.messages, {**review, "response": final.completion.to_dict()})
        return self._request_review(context, state)

    def _load_state(self, context: Context, messages: list[dict[str, Any]], params: dict[str, Any]) -> RoundState:
        from airflow_agentchat.operators.task_state import RoundState

        keep = self.toolbox is not None or self.approval_required()
        return RoundState.load(context, messages, params, self.log, enabled=keep)

    def _push_trace(self, context: Context, state: RoundState) -> None:
        if self.toolbox is not None:
            context["ti"].xcom_push(key="tool_trace", value=state.trace)

    def _review_saved(self, state: RoundState, context: Context) -> Any:
        """A retry of a task whose answer an earlier try got: push its XComs again and ask for the review."""
        self.log.info("The answer was paid for by an earlier try; asking for its review again")
        context["ti"].xcom_push(key="response", value=(state.final or {}).get("response"))
        context["ti"].xcom_push(key="usage", value=state.usage.as_dict())
        self._push_trace(context, state)
        return self._request_review(context, state)

    def _request_review(self, context: Context, state: RoundState) -> Any:
        from airflow_agentchat.operators.approval import request_review

        request_review(self, context, state, timeout=self.approval_timeout, default=self.approval_default)

    def approval_complete(
        self, context: Context, event: dict[str, Any], answer: Any = None, structured: bool = False
    ) -> Any:
        """Resume after the review: the approved (or edited) answer, or the failure the reviewer chose."""
        from airflow_agentchat.operators.approval import resume

        spec = self.output_spec() if structured else None
        value = resume(self.log, context, event, answer, spec)
        return self.output_value(value, context) if structured else value

    def output_value(self, value: Any, context: Context) -> Any:
        """What ``return_value`` holds for a validated value (the branch operator branches here)."""
        return value

    def _publish(
        self, completion: ChatCompletion, context: Context, started: float | None, *, usage: dict | None = None
    ) -> Any:
        from airflow_agentchat.operators.answer import publish

        return publish(self.log, context["ti"], completion, self.output_mode, self._spend, started, usage=usage)

    def on_kill(self) -> None:
        """Stop a tool round before its next call and close the request in flight (Airflow calls this on SIGTERM)."""
        self._stop_requested = True
        if "hook" in self.__dict__:
            self.hook.cancel()
