"""The conversation of one completion task: tool rounds, repair rounds and the final answer, over its RoundState.

Every decision of the loop lives here, and none of its I/O: the operator hands in ``send`` (messages and body
fields in, a :class:`~airflow_agentchat.models.ChatCompletion` out; the hook does the HTTP), the toolbox that
runs the Python tools, and the :class:`~airflow_agentchat.operators.task_state.RoundState` that is saved
after each step. Like ``hooks/retry.py``'s ``RetryController``, this keeps the rules in one place and makes
them testable with a fake ``send``; the operator keeps its arguments, XCom and the Airflow callbacks.

The loop, from the first answer on:

* a valid answer (or any answer, without an output schema) that calls no Python tool ends it;
* an answer that calls Python tools is saved (``pending``), its calls are answered (at most
  ``max_tool_calls_per_round`` of them, at most ``max_tool_rounds`` rounds) and the results sent back;
* an answer that does not match the output schema goes back with the errors (at most ``spec.retries`` times).

When it gives up (``gave_up`` says why, before the error is raised), the operator publishes what was paid for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_agentchat.tools import ToolError, assistant_message, describe_call
from airflow_agentchat.usage import TokenUsage

if TYPE_CHECKING:
    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.operators.task_state import RoundState
    from airflow_agentchat.structured_output import Outcome, OutputSpec
    from airflow_agentchat.tools import Toolbox

#: ``send(messages, body_fields)``: one request, its answer.
Send = Callable[[list[dict[str, Any]], dict[str, Any]], "ChatCompletion"]


@dataclass
class Final:
    """How the conversation ended: the last answer, its message and (with an output schema) the valid value."""

    completion: ChatCompletion
    message: dict[str, Any]
    messages: list[dict[str, Any]]
    outcome: Outcome | None
    repairs: int


class Conversation:
    """The tool and repair loop of one task, resumable from (and saved to) ``state``.

    :param send: sends one request (the only way out to the network).
    :param stopping: true once the task was asked to stop (SIGTERM): no further tool call starts.
    """

    def __init__(
        self,
        state: RoundState,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        *,
        send: Send,
        spec: OutputSpec | None,
        toolbox: Toolbox | None,
        log: Any,
        secret: str | None = None,
        max_tool_rounds: int = 8,
        max_tool_calls_per_round: int = 64,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.state = state
        self.messages = state.messages if state.messages is not None else messages
        self.params = params
        self.send = send
        self.spec = spec
        self.toolbox = toolbox
        self.log = log
        self.secret = secret
        self.max_tool_rounds = max_tool_rounds
        self.max_tool_calls_per_round = max_tool_calls_per_round
        self.stopping = stopping
        #: Why the loop gave up, set before the error is raised: the output stayed invalid, or a tool limit.
        self.gave_up: Literal["invalid_output", "tool_limit"] | None = None
        #: The last answer received.
        self.completion: ChatCompletion | None = None

    def run(self, completion: ChatCompletion | None = None) -> Final:
        """From ``completion`` (None: send the next request of the saved conversation) to the final answer."""
        from airflow_agentchat.structured_output import message_of

        state, spec, toolbox = self.state, self.spec, self.toolbox
        if completion is not None:
            state.usage += TokenUsage.of(completion.usage_dict())
        repairs = 0
        asking = self.params  # the body fields of the next request
        while True:
            if state.pending is None:
                if completion is None:
                    if toolbox is not None:
                        self.log.info("Round %d: asking the agent", state.tool_rounds + repairs + 1)
                    completion = self.send(self.messages, asking)
                    state.usage += TokenUsage.of(completion.usage_dict())
                self.completion = completion
                completion.raise_for_content_filter()  # kind content_filter; its usage is counted above
                message = message_of(completion)
                outcome = spec.parse(message) if spec is not None else None
                if outcome is not None and outcome.ok:
                    return self._final(completion, message, outcome, repairs)
                calls = toolbox.calls_to_run(message) if toolbox is not None else []
                if spec is not None and all(c["function"]["name"] == spec.name for c in calls):
                    calls = []  # only the output tool, and invalid: a repair round, not a tool round
                if not calls:
                    if spec is None or outcome is None:
                        return self._final(completion, message, outcome, repairs)
                    repairs = self._repair(spec, message, outcome, repairs)
                    if toolbox is not None:  # a repair asks for the final answer only, not for more tool calls
                        choice = "none" if spec.strategy == "json" else spec.tool_choice
                        asking = {**self.params, "tool_choice": choice}
                    completion = None
                    continue
                self._check_calls(calls)
                notes = {}
                if spec is not None and outcome is not None:
                    why = outcome.redacted(self.secret).describe(5)
                    notes = {
                        c["id"]: f"Not accepted: {why}. Call {spec.name} again when you have the final answer."
                        for c in calls
                        if c["function"]["name"] == spec.name
                    }
                # The paid answer is saved before any tool runs: a retry answers it instead of asking again.
                state.pending = {"message": assistant_message(message, calls), "results": {}, "notes": notes}
                state.save()
            self._tool_round()
            completion, asking = None, self.params

    def _final(
        self, completion: ChatCompletion, message: dict[str, Any], outcome: Outcome | None, repairs: int
    ) -> Final:
        if self.toolbox is not None:
            self.log.info(
                "Final answer after %d tool round(s) and %d call(s)", self.state.tool_rounds, len(self.state.trace)
            )
        if outcome is not None and self.spec is not None:
            self.log.info(
                "Output valid after %d round(s) (%s strategy, from the %s)",
                repairs + 1,
                self.spec.strategy,
                outcome.source,
            )
        return Final(completion, message, self.messages, outcome, repairs)

    def _repair(self, spec: OutputSpec, message: dict[str, Any], outcome: Outcome, repairs: int) -> int:
        """Send the validation errors back (one more repair round), or give up after ``spec.retries``."""
        if repairs >= spec.retries:
            self.gave_up = "invalid_output"
            raise spec.failure(outcome, repairs + 1, self.state.usage.as_dict(), self.secret)
        repairs += 1
        self.log.warning(
            "Answer %d does not match the output schema (%s); sending the errors back (repair %d of %d)",
            repairs,
            outcome.redacted(self.secret).describe(3),
            repairs,
            spec.retries,
        )
        self.messages = [*self.messages, *spec.repair_messages(message, outcome)]
        self.state.messages = self.messages
        self.state.save()
        return repairs

    def _check_calls(self, calls: list[dict[str, Any]]) -> None:
        """Refuse an answer asking for more calls than one round may run (before any of them runs)."""
        if len(calls) > self.max_tool_calls_per_round:
            self.gave_up = "tool_limit"
            raise ToolError(
                f"The agent asked for {len(calls)} tool calls in one answer, more than "
                f"max_tool_calls_per_round={self.max_tool_calls_per_round}; none was run. Raise "
                "max_tool_calls_per_round or tell the agent to call fewer tools at a time",
                round=self.state.tool_rounds + 1,
            )

    def _tool_round(self) -> None:
        """Answer every call of the pending answer, then add the round to the conversation.

        One write per round, not per call (the whole conversation after every call would be quadratic); when
        the round stops early (a tool raised, SIGTERM) the results so far are written, so a retry skips them.
        """
        state, toolbox = self.state, self.toolbox
        pending = state.pending or {}
        calls = pending["message"]["tool_calls"]
        if state.tool_rounds >= self.max_tool_rounds:
            self.gave_up = "tool_limit"
            names = ", ".join(sorted({c["function"]["name"] for c in calls}))
            raise ToolError(
                f"The agent still called tools ({names}) after max_tool_rounds={self.max_tool_rounds} rounds; "
                "raise max_tool_rounds or tell the agent when to answer",
            )
        if toolbox is None:  # a fingerprint covers the tools, so saved calls always have a toolbox
            raise ToolError("the saved conversation has tool calls but the task has no Python tools")
        round_no = state.tool_rounds + 1
        try:
            for call in calls:
                if call["id"] in pending["results"]:
                    continue  # answered by an earlier try
                if self.stopping():
                    raise ToolError(
                        f"Stopped on request (SIGTERM) in tool round {round_no} after "
                        f"{len(pending['results'])} of {len(calls)} calls; a retry runs only the rest",
                        round=round_no,
                    )
                result = toolbox.answer(call, round_no, pending["notes"].get(call["id"]))
                self.log.info("Round %d: %s", round_no, describe_call(result.trace))
                pending["results"][call["id"]] = result.message
                state.trace.append(result.trace)
        except BaseException:
            state.save()
            raise
        self.messages = [*self.messages, pending["message"], *(pending["results"][c["id"]] for c in calls)]
        state.messages, state.pending, state.tool_rounds = self.messages, None, round_no
        state.save()
