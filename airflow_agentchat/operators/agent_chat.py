"""AgentChatCompletionOperator: one conversation with an agent, its answer and token usage in XCom.

Module import stays cheap (no pydantic models, no httpx client): the hook, the models and the trigger are
imported in ``execute``, because DAG files are parsed far more often than tasks run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_agentchat.operators.base import AgentChatRequestOperator
from airflow_agentchat.request_body import compose_messages, load_json

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.operators.round_state import RoundState
    from airflow_agentchat.operators.spending import TaskSpend
    from airflow_agentchat.structured_output import OutputSpec
    from airflow_agentchat.tools import Toolbox

Output = Literal["text", "message", "response"]
_OUTPUTS = ("text", "message", "response")
_FILE_FIELDS = ("messages", "request", "output_schema")  # the fields that may name a .json / .j2 template file
_FILE_EXT = (".json", ".j2")
_STRATEGIES = ("auto", "tool", "json")  # structured_output.STRATEGIES, repeated to keep it out of DAG parsing
_TOOL_ERRORS = ("return", "raise")
_APPROVAL_DEFAULTS = ("approve", "reject")  # approval.DEFAULTS, repeated to keep it out of DAG parsing


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

    Spend (see ``docs/operations.md``): ``max_total_tokens`` / ``max_cost`` bound the task's requests, repair
    rounds and Airflow retries together; with prices on the connection, key ``cost`` sits next to ``usage``.
    Both are pushed even when the task fails after paid requests.

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
        "require_approval",
        *AgentChatRequestOperator.template_fields,
    )
    # Empty: Airflow would treat any templated string ending in an extension as a file to load, mapped and
    # XCom values included. Only the author's file fields load files (resolve_template_files, render_template).
    template_ext: Sequence[str] = ()
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
        if isinstance(tools, list | tuple):  # checked here without importing the tools module (DAG parsing)
            python_tools = [tool for tool in tools if callable(tool) and not isinstance(tool, Mapping)]
            names = [getattr(tool, "__name__", None) for tool in python_tools]
            for tool, name in zip(python_tools, names, strict=True):
                if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
                    raise ValueError(
                        f"a Python tool needs a name (a def, not a lambda or partial): {tool!r} has {name!r}"
                    )
            if len(set(names)) != len(names):
                raise ValueError(f"two Python tools have the same name: {sorted(map(str, names))}")
            tools = [tool for tool in tools if not (callable(tool) and not isinstance(tool, Mapping))] or None
        super().__init__(tools=tools, **kwargs)  # type: ignore[arg-type]  # the functions were taken out
        self.python_tools = python_tools
        if not isinstance(max_tool_rounds, int) or isinstance(max_tool_rounds, bool) or max_tool_rounds < 1:
            raise ValueError(f"max_tool_rounds must be a whole number >= 1, got {max_tool_rounds!r}")
        if (
            not isinstance(max_tool_calls_per_round, int)
            or isinstance(max_tool_calls_per_round, bool)
            or max_tool_calls_per_round < 1
        ):
            raise ValueError(f"max_tool_calls_per_round must be a whole number >= 1, got {max_tool_calls_per_round!r}")
        if tool_errors not in _TOOL_ERRORS:
            raise ValueError(f"tool_errors must be one of {', '.join(_TOOL_ERRORS)}, got {tool_errors!r}")
        if approval_default is not None and approval_default not in _APPROVAL_DEFAULTS:
            raise ValueError(f"approval_default must be 'approve', 'reject' or None, got {approval_default!r}")
        if require_approval is True and output != "text":
            raise ValueError("require_approval reviews the answer: leave output at 'text'")
        if isinstance(approval_timeout, int | float) and not isinstance(approval_timeout, bool):
            approval_timeout = timedelta(seconds=approval_timeout)
        if approval_timeout is not None and (
            not isinstance(approval_timeout, timedelta) or approval_timeout.total_seconds() <= 0
        ):
            raise ValueError(f"approval_timeout must be a timedelta or seconds > 0, got {approval_timeout!r}")
        self.max_tool_rounds = max_tool_rounds
        self.max_tool_calls_per_round = max_tool_calls_per_round
        self._stop_requested = False  # set by on_kill (SIGTERM): the tool loop stops before its next call
        self.tool_errors = tool_errors
        self.require_approval = require_approval
        self.approval_timeout = approval_timeout
        self.approval_default = approval_default
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
        """Load the template files the DAG author named: only ``messages``, ``request`` and ``output_schema``
        values, and only when the file exists in the DAG's template search path (else the value is text)."""
        for field in _FILE_FIELDS:
            value = getattr(self, field, None)
            source = self._template_file(value, self.get_template_env())
            if source is not None:
                setattr(self, field, source)
        self.prepare_template()

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """Render like Airflow does (upstream data, in ``seen_oids``, stays as it is); a file field of a mapped
        task (``.partial(messages="x.json.j2")``, not loaded at parse time) renders its file."""
        if (
            isinstance(content, str)
            and not (seen_oids and id(content) in seen_oids)
            and any(content is getattr(self, field, None) for field in _FILE_FIELDS)
        ):
            jinja_env = jinja_env or self.get_template_env()
            if self._template_file(content, jinja_env) is not None:
                return self._render(jinja_env.get_template(content), context)
        return super().render_template(content, context, jinja_env, seen_oids)

    @staticmethod
    def _template_file(value: Any, env: Any) -> str | None:
        """The source of the template file ``value`` names, or None when it names none in the search path."""
        if not isinstance(value, str) or not value.endswith(_FILE_EXT) or env.loader is None:
            return None
        from jinja2 import TemplateNotFound

        try:
            return env.loader.get_source(env, value)[0]
        except (TemplateNotFound, OSError, ValueError):
            return None

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

        others = [
            (tool.get("function") or {}).get("name")
            for tool in load_json("tools", getattr(self, "tools", None)) or ()
            if isinstance(tool, Mapping)
        ]
        return Toolbox(
            self.python_tools,
            other_names=[name for name in others if name],
            tool_errors=self.tool_errors,
            secret=self.hook.settings.api_key,
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
        if self.approval_required():
            from airflow_agentchat.exceptions import InvalidRequestError

            if self.output_mode != "text":
                raise InvalidRequestError([("require_approval", "reviews the answer: leave output at 'text'")])
            if (params.get("n") or 1) != 1:
                raise InvalidRequestError([("n", "must be 1 with require_approval (one answer is reviewed)")])
        return messages, params, spec

    def approval_required(self) -> bool:
        """``require_approval`` after rendering: a bool, or the texts a template gives (``"True"``, ``"false"``)."""
        value = self.require_approval
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        from airflow_agentchat.exceptions import InvalidRequestError

        raise InvalidRequestError([("require_approval", f"must be true or false, got {value!r}")])

    def execute(self, context: Context) -> Any:
        messages, params, spec = self.prepare()
        request = self.hook.build_request(messages, **params)
        spend = self._begin_spend(context)
        state = self._load_state(context, messages, params)
        if state.final is not None:  # an earlier try has the answer; only the review is missing
            return self._review_saved(state, context)
        if self.deferrable and not request.stream and self.toolbox is None and not state.resumed:
            from airflow_agentchat.triggers.agent_chat import AgentChatCompletionTrigger

            spend.check(request)  # the triggerer sends it: the budget is checked here
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
        with self._spend_guard(context):
            completion = None if state.resumed or self.toolbox is not None else self._send(request)
            return self._converse(spec, messages, params, completion, context, started, state)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: check the event, then publish like a direct run.

        With an output schema, repair rounds (if the answer is invalid) run here, in the worker.
        """
        from airflow_agentchat.exceptions import AgentChatError
        from airflow_agentchat.models import ChatCompletion

        if not isinstance(event, dict) or event.get("status") not in ("success", "error"):
            raise AgentChatError(f"Unexpected trigger event: {str(event)[:200]}")
        spend = self._begin_spend(context)
        with self._spend_guard(context):
            if event["status"] == "error":
                error = (
                    AgentChatError.from_dict(event["error"])  # the class direct mode would raise
                    if isinstance(event.get("error"), dict)
                    else AgentChatError(event.get("message") or "agent chat request failed in the triggerer")
                )
                spend.failed(error, None)
                raise error
            completion = ChatCompletion.model_validate(event["response"])
            completion._meta = dict(event.get("meta") or {})
            spend.paid(completion, None)
            messages, params, spec = self.prepare()
            return self._converse(spec, messages, params, completion, context, None)

    def _send(self, request: Any) -> ChatCompletion:
        spend = self.__dict__.get("_spend")
        if spend is None:
            return self._send_now(request)
        return spend.send(request, self._send_now)

    def _send_now(self, request: Any) -> ChatCompletion:
        return self._stream(request) if request.stream else self.hook.send(request)

    # ------------------------------------------------------------------------------ spend and lineage

    def _begin_spend(self, context: Context) -> TaskSpend:
        """Budget, prices and metrics of this try (earlier tries' spend read from the task state store)."""
        from airflow_agentchat.operators.spending import TaskSpend

        self._spend = TaskSpend(self, context)
        return self._spend

    @contextmanager
    def _spend_guard(self, context: Context) -> Iterator[None]:
        """Usage and cost reach XCom even when the task fails after paid requests."""
        spend = self._spend
        try:
            yield
        except BaseException:
            ti = context.get("ti")
            if ti is not None and spend.requests and not spend.pushed:
                spend.push(ti)
            raise
        spend.succeeded()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """No datasets (the conversation is not one); a run facet with endpoint host, model, tokens, errors."""
        from airflow_agentchat.lineage import operator_lineage

        spend = self.__dict__.get("_spend")
        settings = self.hook.settings
        model = getattr(self, "model", None)  # a body field, set from BODY_FIELDS by the base class
        facts = spend.facts(settings.base_url, spend.model or model or settings.model) if spend else {}
        return operator_lineage(facts)

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
        """From the first answer to the final one: run Python tools, repair invalid answers, then deliver.

        ``completion`` is the first answer (None: send the next request of ``state``'s conversation). Every
        round is added to the usage and saved in ``state`` (see ``round_state``), so a retry resumes here.
        """
        from airflow_agentchat.structured_output import message_of
        from airflow_agentchat.tools import ToolError, assistant_message, describe_call
        from airflow_agentchat.usage import TokenUsage

        if state is None:
            state = self._load_state(context, messages, params)
        if state.messages is not None:
            messages = state.messages
        if completion is not None:
            state.usage += TokenUsage.of(completion.usage_dict())
        toolbox = self.toolbox
        secret = self.hook.settings.api_key
        repairs = 0
        outcome = None
        asking = params  # the body fields of the next request
        while True:
            if state.pending is None:
                if completion is None:
                    if toolbox is not None:
                        self.log.info("Round %d: asking the agent", state.tool_rounds + repairs + 1)
                    completion = self._send(self.hook.build_request(messages, **asking))
                    state.usage += TokenUsage.of(completion.usage_dict())
                message = message_of(completion)
                outcome = spec.parse(message) if spec is not None else None
                if outcome is not None and outcome.ok:
                    break
                calls = toolbox.calls_to_run(message) if toolbox is not None else []
                if spec is not None and all(c["function"]["name"] == spec.name for c in calls):
                    calls = []  # only the output tool, and invalid: a repair round, not a tool round
                if not calls:
                    if outcome is None:
                        break
                    if repairs >= spec.retries:  # type: ignore[union-attr]
                        self._push_trace(context, state)
                        if "_spend" in self.__dict__:
                            self._spend.invalid_output()
                        self._publish(completion, context, started, usage=state.usage.as_dict())
                        raise spec.failure(outcome, repairs + 1, state.usage.as_dict(), secret)  # type: ignore[union-attr]
                    repairs += 1
                    self.log.warning(
                        "Answer %d does not match the output schema (%s); sending the errors back (repair %d of %d)",
                        repairs,
                        outcome.redacted(secret).describe(3),
                        repairs,
                        spec.retries,  # type: ignore[union-attr]
                    )
                    messages = [*messages, *spec.repair_messages(message, outcome)]  # type: ignore[union-attr]
                    if toolbox is not None:  # a repair asks for the final answer only, not for more tool calls
                        choice = "none" if spec.strategy == "json" else spec.tool_choice  # type: ignore[union-attr]
                        asking = {**params, "tool_choice": choice}
                    state.messages, completion = messages, None
                    state.save()
                    continue
                notes = {}
                if spec is not None and outcome is not None:
                    why = outcome.redacted(secret).describe(5)
                    notes = {
                        c["id"]: f"Not accepted: {why}. Call {spec.name} again when you have the final answer."
                        for c in calls
                        if c["function"]["name"] == spec.name
                    }
                if len(calls) > self.max_tool_calls_per_round:
                    self._push_trace(context, state)
                    context["ti"].xcom_push(key="usage", value=state.usage.as_dict())
                    raise ToolError(
                        f"The agent asked for {len(calls)} tool calls in one answer, more than "
                        f"max_tool_calls_per_round={self.max_tool_calls_per_round}; none was run. Raise "
                        "max_tool_calls_per_round or tell the agent to call fewer tools at a time",
                        round=state.tool_rounds + 1,
                    )
                # The paid answer is saved before any tool runs: a retry answers it instead of asking again.
                state.pending = {"message": assistant_message(message, calls), "results": {}, "notes": notes}
                state.save()
            pending = state.pending
            calls = pending["message"]["tool_calls"]
            if state.tool_rounds >= self.max_tool_rounds:
                self._push_trace(context, state)
                context["ti"].xcom_push(key="usage", value=state.usage.as_dict())
                names = ", ".join(sorted({c["function"]["name"] for c in calls}))
                raise ToolError(
                    f"The agent still called tools ({names}) after max_tool_rounds={self.max_tool_rounds} rounds; "
                    "raise max_tool_rounds or tell the agent when to answer",
                )
            round_no = state.tool_rounds + 1
            # One write per round, not per call (a whole conversation per call is quadratic); when the round
            # stops early (a tool raised, SIGTERM) the results so far are written, so a retry skips those calls.
            try:
                for call in calls:
                    if call["id"] in pending["results"]:
                        continue  # answered by an earlier try
                    if self._stop_requested:
                        raise ToolError(
                            f"Stopped on request (SIGTERM) in tool round {round_no} after "
                            f"{len(pending['results'])} of {len(calls)} calls; a retry runs only the rest",
                            round=round_no,
                        )
                    result = toolbox.answer(call, round_no, pending["notes"].get(call["id"]))  # type: ignore[union-attr]
                    self.log.info("Round %d: %s", round_no, describe_call(result.trace))
                    pending["results"][call["id"]] = result.message
                    state.trace.append(result.trace)
            except BaseException:
                state.save()
                raise
            messages = [*messages, pending["message"], *(pending["results"][c["id"]] for c in calls)]
            state.messages, state.pending, state.tool_rounds, completion = messages, None, round_no, None
            asking = params
            state.save()
        if toolbox is not None:
            self.log.info("Final answer after %d tool round(s) and %d call(s)", state.tool_rounds, len(state.trace))
            self._push_trace(context, state)
        if outcome is not None:
            self.log.info(
                "Output valid after %d round(s) (%s strategy, from the %s)",
                repairs + 1,
                spec.strategy,  # type: ignore[union-attr]
                outcome.source,
            )
        published = self._publish(completion, context, started, usage=state.usage.as_dict())
        structured = outcome is not None
        value = outcome.value if structured else published  # type: ignore[union-attr]
        if not self.approval_required():
            state.clear()
            return self.output_value(value, context) if structured else value
        state.messages = messages
        state.final = {"value": value, "structured": structured, "message": message, "response": completion.to_dict()}
        state.save()
        return self._request_review(context, state)

    def _load_state(self, context: Context, messages: list[dict[str, Any]], params: dict[str, Any]) -> RoundState:
        from airflow_agentchat.operators.round_state import RoundState

        keep = self.toolbox is not None or self.approval_required()
        return RoundState.load(context, messages, params, self.log, enabled=keep)

    def _push_trace(self, context: Context, state: RoundState) -> None:
        if self.toolbox is not None:
            context["ti"].xcom_push(key="tool_trace", value=state.trace)

    def _review_saved(self, state: RoundState, context: Context) -> Any:
        """A retry of a task whose answer an earlier try got: push its XComs again and ask for the review."""
        ti = context["ti"]
        ti.xcom_push(key="response", value=state.final["response"])  # type: ignore[index]
        ti.xcom_push(key="usage", value=state.usage.as_dict())
        self._push_trace(context, state)
        self.log.info("The answer was paid for by an earlier try; asking for its review again")
        return self._request_review(context, state)

    def _request_review(self, context: Context, state: RoundState) -> Any:
        from airflow_agentchat.operators.approval import park_for_review

        final = state.final or {}
        park_for_review(
            self,
            context,
            final.get("value"),
            structured=bool(final.get("structured")),
            usage=state.usage.as_dict(),
            tool_calls=len(state.trace),
            timeout=self.approval_timeout,
            default=self.approval_default,
        )

    def approval_complete(
        self, context: Context, event: dict[str, Any], answer: Any = None, structured: bool = False
    ) -> Any:
        """Resume after the review: the approved (or edited) answer, or the failure the reviewer chose."""
        from airflow_agentchat.operators import round_state
        from airflow_agentchat.operators.approval import ApprovalError, review_outcome

        spec = self.output_spec() if structured else None
        ti = context["ti"]
        try:
            value, record = review_outcome(
                event, answer, structured=structured, validate=spec.validate if spec is not None else None
            )
        except ApprovalError as exc:
            ti.xcom_push(key="approval", value={"decision": exc.decision, "by": exc.reviewer, "comment": exc.comment})
            saved = round_state.saved(context)
            if exc.decision == "rejected" and saved and saved.get("final"):
                # A retry asks the agent for a revision with the reviewer's comment, repeating no tool.
                final = saved.pop("final")
                why = exc.comment or "no reason given"
                saved["messages"] = [
                    *(saved.get("messages") or []),
                    {"role": "assistant", "content": final["message"].get("content") or ""}
                    if not final["message"].get("tool_calls")
                    else final["message"],
                    *(
                        {"role": "tool", "tool_call_id": call["id"], "content": "Rejected by the reviewer."}
                        for call in final["message"].get("tool_calls") or ()
                    ),
                    {"role": "user", "content": f"A reviewer rejected this answer: {why}. Give a revised answer."},
                ]
                saved["final"] = None
                round_state.store_raw(context, saved)
            raise
        self.log.info(
            "Answer %s by %s%s",
            record["decision"],
            record["by"] or ("nobody (approval_default)" if record["timed_out"] else "a reviewer"),
            f": {record['comment']}" if record["comment"] else "",
        )
        ti.xcom_push(key="approval", value=record)
        round_state.forget(context)
        return self.output_value(value, context) if structured else value

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
        spend = self.__dict__.get("_spend")
        if spend is not None:
            spend.push(ti, usage)
        else:
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
        """Close the connection in flight, so a killed task stops waiting for (and paying for) the answer, and
        stop a tool round before its next call (Airflow calls this on SIGTERM)."""
        self._stop_requested = True
        if "hook" in self.__dict__:
            self.hook.cancel()
