"""A person approves, edits or rejects the agent's answer, through Airflow's human-in-the-loop.

The operator builds the review from the answer it already has (:func:`park_for_review`): a human-in-the-loop
request (the standard provider's, the same rows ``HITLOperator`` writes) with two options, *Approve* and
*Reject*, and two form fields: ``answer``, filled with the agent's answer (edit it, then Approve, to use your
version) and ``comment``. On Airflow 3.3 the task then waits in the ``awaiting_input`` state, holding no worker
slot; older versions (3.1, 3.2) defer to the provider's ``HITLTrigger``. The answer travels in the resume
kwargs, so resuming never sends the request again.

:func:`review_outcome` turns the response into the value the task returns, or the error it fails with. It is
pure, so every decision is testable without Airflow.

Imported by the operator in ``execute`` only: the standard provider's modules are not for DAG parsing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_agentchat.exceptions import AgentChatError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.operators.task_state import RoundState
    from airflow_agentchat.structured_output import OutputSpec

APPROVE = "Approve"
REJECT = "Reject"
#: ``approval_default`` values and the option each one picks when nobody answers in time.
DEFAULTS = {"approve": APPROVE, "reject": REJECT}
#: The operator method the task resumes in.
RESUME_METHOD = "approval_complete"


class ApprovalError(AgentChatError, kind="not_approved"):
    """The answer was not approved: rejected, not reviewed in time, or edited into an invalid value.

    ``decision`` is ``"rejected"``, ``"timed_out"`` or ``"invalid_edit"``; ``reviewer`` and ``comment`` say who
    and why, when a person answered.
    """

    def __init__(self, message: str, *, decision: str, reviewer: str | None = None, comment: str | None = None):
        self.decision = decision
        self.reviewer = reviewer
        self.comment = comment
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "decision": self.decision, "reviewer": self.reviewer, "comment": self.comment}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(
            str(data.get("message") or ""),
            decision=str(data.get("decision") or "rejected"),
            reviewer=data.get("reviewer"),
            comment=data.get("comment"),
        )


def review_body(answer: Any, *, structured: bool, usage: Mapping[str, Any], tool_calls: int) -> str:
    """The Markdown the reviewer reads above the form."""
    if structured:
        shown = "```json\n" + json.dumps(answer, indent=2, ensure_ascii=False) + "\n```"
    else:
        shown = "\n".join(f"> {line}" for line in str(answer or "").splitlines()) or "> (no text)"
    cost = f"{usage.get('total_tokens', 0)} tokens"
    if tool_calls:
        cost += f", {tool_calls} tool call(s) (see the task's `tool_trace` XCom)"
    return (
        f"The agent answered ({cost}):\n\n{shown}\n\n"
        "**Approve** to use this answer. To use your own version, change the *answer* field, then **Approve**. "
        "**Reject** fails the task; say why in *comment*."
    )


def review_params(answer: Any, *, structured: bool) -> dict[str, Any]:
    """The form fields (serialized Airflow params): the answer to edit and a comment."""
    from airflow.sdk import Param

    if structured:
        field = Param(answer, type="object", title="Answer", description="Edit the JSON to send your version.")
    else:
        field = Param(answer, type=["string", "null"], title="Answer", description="Edit to send your version.")
    comment = Param("", type=["string", "null"], title="Comment", description="Why (required to be useful on Reject).")
    return {"answer": field.serialize(), "comment": comment.serialize()}


def park_for_review(
    operator: Any,
    context: Context,
    answer: Any,
    *,
    structured: bool,
    usage: Mapping[str, Any],
    tool_calls: int,
    timeout: timedelta | None,
    default: str | None,
) -> NoReturn:
    """Write the review request and stop the task until a person (or the timeout) answers."""
    from airflow_agentchat.compat import HAS_AWAITING_INPUT, HITL_UNSUPPORTED, task_awaiting_input, utcnow

    if HITL_UNSUPPORTED:
        raise AgentChatError(HITL_UNSUPPORTED)
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    ti = context["task_instance"]
    params = review_params(answer, structured=structured)
    defaults = [DEFAULTS[default]] if default else None
    upsert_hitl_detail(
        ti_id=ti.id,
        options=[APPROVE, REJECT],
        subject=f"Review the agent's answer: {ti.dag_id}.{ti.task_id}",
        body=review_body(answer, structured=structured, usage=usage, tool_calls=tool_calls),
        defaults=defaults,
        multiple=False,
        params=params,
        assigned_users=None,
    )
    kwargs = {"answer": answer, "structured": structured}
    operator.log.info(
        "Waiting for a person to approve the answer (timeout: %s, then %s)",
        timeout or "none",
        f"'{default}'" if default else "the task fails",
    )
    if HAS_AWAITING_INPUT:
        raise task_awaiting_input()(method_name=RESUME_METHOD, kwargs=kwargs, timeout=timeout)
    from airflow.providers.standard.triggers.hitl import HITLTrigger

    operator.defer(
        trigger=HITLTrigger(
            ti_id=ti.id,
            options=[APPROVE, REJECT],
            defaults=defaults,
            params=params,
            multiple=False,
            timeout_datetime=utcnow() + timeout if timeout else None,
        ),
        method_name=RESUME_METHOD,
        kwargs=kwargs,
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


def request_review(
    operator: Any, context: Context, state: RoundState, *, timeout: timedelta | None, default: str | None
) -> NoReturn:
    """Ask for the review of the final answer ``state`` holds (saved there: a retry asks again, sends nothing)."""
    final = state.final or {}
    park_for_review(
        operator,
        context,
        final.get("value"),
        structured=bool(final.get("structured")),
        usage=state.usage.as_dict(),
        tool_calls=len(state.trace),
        timeout=timeout,
        default=default,
    )


def resume(log: Any, context: Context, event: Mapping[str, Any], answer: Any, spec: OutputSpec | None) -> Any:
    """The value the task returns after the review (pushing the ``approval`` record), or ``ApprovalError``.

    A rejection is kept in the saved conversation, so a retry asks the agent for a revision with the
    reviewer's comment, repeating no tool.
    """
    from airflow_agentchat.operators.task_state import RoundState, forget

    ti = context["ti"]
    try:
        value, record = review_outcome(
            event, answer, structured=spec is not None, validate=spec.validate if spec is not None else None
        )
    except ApprovalError as exc:
        ti.xcom_push(key="approval", value={"decision": exc.decision, "by": exc.reviewer, "comment": exc.comment})
        state = RoundState.reopen(context)
        if exc.decision == "rejected" and state is not None:
            state.ask_revision(exc.comment)
        raise
    log.info(
        "Answer %s by %s%s",
        record["decision"],
        record["by"] or ("nobody (approval_default)" if record["timed_out"] else "a reviewer"),
        f": {record['comment']}" if record["comment"] else "",
    )
    ti.xcom_push(key="approval", value=record)
    forget(context)
    return value


def review_outcome(
    event: Mapping[str, Any],
    answer: Any,
    *,
    structured: bool,
    validate: Callable[[Any], tuple[Any, list[tuple[str, str]]]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(value to return, record for the approval XCom)`` from the review's response, or ``ApprovalError``.

    Approve with the answer unchanged returns it; Approve with a changed ``answer`` returns the change,
    validated with ``validate`` (the output schema's) when given; Reject and a timeout without
    ``approval_default`` raise.
    """
    if "error" in event or event.get("error_type"):
        raise ApprovalError(
            f"Nobody reviewed the answer in time ({event.get('error') or event.get('error_type')}); set "
            "approval_default to approve or reject it instead of failing",
            decision="timed_out",
        )
    chosen = list(event.get("chosen_options") or [])
    params_input = dict(event.get("params_input") or {})
    reviewer = _reviewer(event.get("responded_by_user"))
    comment = params_input.get("comment") or None
    timed_out = bool(event.get("timedout"))
    at = event.get("responded_at")
    record: dict[str, Any] = {
        "by": reviewer,
        "comment": comment,
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "timed_out": timed_out,
    }
    if chosen != [APPROVE]:
        who = "no review in time, approval_default='reject'" if timed_out else f"by {reviewer or 'a reviewer'}"
        raise ApprovalError(
            f"The answer was rejected ({who}): {comment or '(no comment)'}",
            decision="rejected",
            reviewer=reviewer,
            comment=comment,
        )
    edited = params_input.get("answer", answer)
    if structured and isinstance(edited, str):
        try:
            edited = json.loads(edited)
        except ValueError as exc:
            raise ApprovalError(
                f"The edited answer is not valid JSON ({exc}); nothing was used", decision="invalid_edit"
            ) from None
    if edited == answer:
        return answer, {**record, "decision": "approved"}
    if validate is not None:
        value, errors = validate(edited)
        if errors:
            shown = "; ".join(f"{path}: {msg}" for path, msg in errors[:10])
            raise ApprovalError(
                f"The edited answer does not match the output schema: {shown}",
                decision="invalid_edit",
                reviewer=reviewer,
                comment=comment,
            )
        edited = value
    return edited, {**record, "decision": "edited"}


def _reviewer(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return user.get("name") or user.get("id")
    return getattr(user, "name", None) or (str(user) if user else None)
