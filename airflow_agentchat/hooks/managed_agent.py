"""A DigitalOcean agent as a managed agent of Airflow's common.ai provider (its ``BaseManagedAgentHook`` contract).

With ``apache-airflow-providers-common-ai`` installed (the ``common-ai`` extra, Python >= 3.11), this hook is
what common.ai's ``ManagedAgentToolset`` and ``FailoverManagedAgentClient`` consume::

    support = AgentChatManagedAgentHook("do_support").agent("support")
    toolset = ManagedAgentToolset(support, tool_name="ask_support_agent", timeout=60)

One ``agentchat`` connection reaches one agent (its endpoint is the agent), so ``agent`` is the name the
agent is known by in logs and metrics, never an address: the connection alone decides where a request goes.

Without common.ai this module still imports (nothing is imported from common.ai at DAG parse time: the
operators never import hooks), and every contract method says which extra is missing.

Errors are sorted the way common.ai's consumers act on them (its failover client moves on for anything but
``ManagedAgentRejected``):

* ``ManagedAgentRejected``: the request itself is wrong (checked before sending, or a 400 / 422), the content
  filter stopped the answer, or the answer failed the output schema after its repair rounds. Another agent
  would say the same, so no failover; common.ai's toolset lets the calling model rephrase.
* ``ManagedAgentInvocationError``: 401 / 403 / 404: this connection's key or endpoint is wrong.
* everything else keeps its own class (:class:`~airflow_agentchat.exceptions.ServerError`,
  :class:`~airflow_agentchat.exceptions.RateLimitError`, the connection errors, ...), after the hook's retries.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_agentchat.hooks.agent_chat import AgentChatHook
from airflow_agentchat.request_body import BODY_FIELDS

if TYPE_CHECKING:
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected
    from airflow.providers.common.ai.managed_agents.base import (
        BaseManagedAgentHook,
        ManagedAgentCapabilities,
        ManagedAgentRef,
        ManagedAgentRequest,
        ManagedAgentResponse,
        ManagedAgentUsage,
    )

    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.structured_output import OutputSpec
else:
    try:
        from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected
        from airflow.providers.common.ai.managed_agents.base import (
            BaseManagedAgentHook,
            ManagedAgentCapabilities,
            ManagedAgentRef,
            ManagedAgentResponse,
            ManagedAgentUsage,
        )
    except ImportError:

        def _needs_common_ai(*args: Any, **kwargs: Any) -> Any:
            from airflow_agentchat.compat import AirflowException

            raise AirflowException(
                "Using a DigitalOcean agent as a common.ai managed agent needs the common-ai extra "
                "(Python >= 3.11): pip install 'airflow-agentchat[common-ai]'"
            )

        class BaseManagedAgentHook:
            """Stand-in for common.ai's contract base when common.ai is not installed."""

            agent = _needs_common_ai

        ManagedAgentCapabilities = ManagedAgentRef = ManagedAgentResponse = ManagedAgentUsage = _needs_common_ai

        class ManagedAgentRejected(Exception):  # never raised: invoke_agent needs common.ai first
            pass

        class ManagedAgentInvocationError(RuntimeError):
            pass


#: ``vendor_options`` read by the hook itself (the rest are body fields of the reference).
HOOK_OPTIONS = ("system_prompt", "output_schema", "output_strategy", "output_retries")
#: Body fields ``vendor_options`` may not set: the contract's own fields carry them.
RESERVED_OPTIONS = frozenset({"messages", "stream", "stream_options", "n"})
_REJECTED_STATUSES = (400, 422)
_TERMINAL_STATUSES = (401, 403, 404)


class AgentChatManagedAgentHook(AgentChatHook, BaseManagedAgentHook):
    """:class:`AgentChatHook` with common.ai's managed-agent contract (``agent_platform`` below).

    ``vendor_options`` of a request:

    * the reference's body fields (``temperature``, ``max_tokens``, ``metadata``, ``extra_body``, ...) and the
      DigitalOcean extras (``include_retrieval_info``, ``include_functions_info``, ``include_guardrails_info``,
      ``provide_citations``), sent in the body; ``messages``, ``stream``, ``stream_options`` and ``n`` are
      refused (one answer, from the request's own prompt or messages);
    * ``system_prompt``: a system message put first;
    * ``output_schema`` (a JSON Schema dict whose top is an object), with ``output_strategy`` and
      ``output_retries`` as on the operator: the validated value is returned as ``structured`` (and as JSON
      ``text``, which is what a calling model reads).

    ``ManagedAgentRequest.timeout`` bounds the whole call: every attempt, the back-offs between them and the
    repair rounds. Past it the call fails with :class:`~airflow_agentchat.exceptions.NetworkTimeoutError`.
    """

    agent_platform = "digitalocean.gradient_agent"

    def agent(self, agent: str) -> Any:
        """Bind one agent (common.ai's ``BoundManagedAgent``): what its toolset and failover client consume."""
        return BaseManagedAgentHook.agent(self, agent)  # not AgentChatHook.agent, which builds a hook like this one

    def resolve_agent(self, agent: str) -> ManagedAgentRef:
        """The agent's reference; ``agent`` is its name (the connection decides the endpoint). No network call."""
        if not isinstance(agent, str) or not agent.strip() or len(agent) > 256 or not agent.isprintable():
            raise ValueError(f"agent: a name of 1 to 256 printable characters, got {agent!r}")
        return ManagedAgentRef(platform=self.agent_platform, name=agent)

    def get_agent_capabilities(self, agent: str) -> ManagedAgentCapabilities:
        """Structured output and usage, no sessions (each call is a fresh conversation), no trace id."""
        self.resolve_agent(agent)
        return ManagedAgentCapabilities(sessions=False, structured_output=True, usage=True, trace=False)

    def invoke_agent(self, agent: str, request: ManagedAgentRequest) -> ManagedAgentResponse:
        """Send the request to the connection's agent and return its answer (blocking)."""
        self.resolve_agent(agent)
        if request.session_id is not None:
            raise ValueError("session_id: agent chat completions keep no conversation state between calls")
        options = dict(request.vendor_options or {})
        messages, params, spec = self._prepare(request, options)
        timeout = request.timeout
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(f"timeout: a number of seconds > 0, got {timeout!r}")
        call = _Call(self, timeout)
        try:
            completion, structured = call.run(messages, params, spec)
        except Exception as exc:
            mapped = _mapped(exc, call.timed_out, timeout)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            call.close()
        usage = completion.usage
        text = completion.text or ""
        if spec is not None:
            text = json.dumps(structured, ensure_ascii=False)
        return ManagedAgentResponse(
            text=text,
            raw=completion.to_dict(),
            structured=structured,
            usage=ManagedAgentUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
            if usage is not None
            else None,
            trace_ref=completion.meta.get("request_id"),
        )

    def _prepare(
        self, request: ManagedAgentRequest, options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], OutputSpec | None]:
        """Messages, body fields and output spec from the request; bad options raise before anything is sent."""
        from airflow_agentchat.exceptions import InvalidRequestError
        from airflow_agentchat.request_body import compose_messages

        problems = [
            (
                f"vendor_options.{key}",
                "set by the managed-agent request itself"
                if key in RESERVED_OPTIONS
                else f"unknown option; use a body field ({', '.join(BODY_FIELDS)}) or one of {', '.join(HOOK_OPTIONS)}",
            )
            for key in options
            if key in RESERVED_OPTIONS or (key not in BODY_FIELDS and key not in HOOK_OPTIONS)
        ]
        if problems:
            raise InvalidRequestError(problems)
        hook_options = {key: options.pop(key) for key in HOOK_OPTIONS if key in options}
        messages = compose_messages(
            prompt=request.prompt,
            system_prompt=hook_options.get("system_prompt"),
            messages=None if request.messages is None else [dict(m) for m in request.messages],
        )
        spec = None
        if hook_options.get("output_schema") is not None:
            from airflow_agentchat.structured_output import OutputSpec

            schema = hook_options["output_schema"]
            if not isinstance(schema, Mapping):
                raise InvalidRequestError([("vendor_options.output_schema", "must be a JSON Schema dict")])
            spec = OutputSpec.build(
                schema,
                strategy=hook_options.get("output_strategy", "auto"),
                retries=hook_options.get("output_retries", 2),
            )
            messages, options = spec.apply(messages, options)
        self.build_request(messages, **options)  # every field checked before anything is sent
        return messages, options, spec


class _Call:
    """One ``invoke_agent`` call on a hook of its own, so a timeout can cut it without touching other calls.

    The hook's ``cancel`` (what ``on_kill`` uses) ends a request in flight and any back-off wait at once; a
    timer calls it when the call's ``timeout`` passes. Each attempt's read timeout and deadline are capped at
    the timeout too, so a single slow attempt cannot outlive it either.
    """

    def __init__(self, parent: AgentChatHook, timeout: float | None) -> None:
        self.timeout = timeout
        self.timed_out = False
        self.hook = AgentChatHook(
            parent.agentchat_conn_id,
            timeout=parent._timeout,
            max_retries=parent._max_retries,
            retry_policy=parent._retry_policy,
            transport=parent._given_transport,
        )
        settings = parent.settings
        if timeout is not None:
            settings = dataclasses.replace(
                settings, timeout=min(settings.timeout, timeout), attempt_deadline=min(settings.deadline, timeout)
            )
        self.hook.__dict__["settings"] = settings
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.timed_out = True
        self.hook.cancel()

    def run(
        self, messages: list[dict[str, Any]], params: dict[str, Any], spec: OutputSpec | None
    ) -> tuple[ChatCompletion, Any]:
        """The completion and, with a spec, the validated value (after up to ``spec.retries`` repair rounds)."""
        from airflow_agentchat.structured_output import message_of

        repairs = 0
        while True:
            completion = self.hook.send(self.hook.build_request(messages, **params))
            if self.timed_out:
                raise TimeoutError
            if spec is None:
                completion.raise_for_content_filter()
                return completion, None
            message = message_of(completion)
            outcome = spec.parse(message)
            if outcome.ok:
                return completion, outcome.value
            completion.raise_for_content_filter()
            if repairs >= spec.retries:
                raise spec.failure(outcome, repairs + 1, completion.usage_dict(), self.hook.settings.api_key)
            repairs += 1
            messages = [*messages, *spec.repair_messages(message, outcome)]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.hook.close()


def _mapped(error: Exception, timed_out: bool, timeout: float | None) -> Exception:
    """The exception common.ai's consumers should see for ``error`` (see the module docstring)."""
    from airflow_agentchat.exceptions import (
        APIError,
        ContentFilterError,
        InvalidRequestError,
        NetworkTimeoutError,
    )
    from airflow_agentchat.structured_output import OutputValidationError

    if timed_out:
        late = NetworkTimeoutError(
            f"Timed out: no answer within timeout={timeout:g}s (the whole call, retries included)"
        )
        late.attempts = getattr(error, "attempts", 0)
        return late
    if isinstance(error, InvalidRequestError | ContentFilterError | OutputValidationError):
        return ManagedAgentRejected(str(error))
    if isinstance(error, APIError) and error.status in _REJECTED_STATUSES:
        return ManagedAgentRejected(str(error))
    if isinstance(error, APIError) and error.status in _TERMINAL_STATUSES:
        return ManagedAgentInvocationError(str(error))
    return error
