"""AgentChatBranchOperator: the agent picks which downstream task(s) run; the others are skipped.

The choice is structured output: an enum of the branch task ids (a list of them with ``allow_multiple``),
validated and repaired like any output schema, so the agent can only name a task that exists. Skipping is
Airflow's own ``BranchMixIn`` (what ``BaseBranchOperator`` and ``@task.branch`` use), so trigger rules, task
groups, mapped tasks and clearing behave exactly as with any branch.

Module import stays cheap: the request machinery is imported in ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_agentchat.compat import BranchMixIn
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_agentchat.structured_output import OutputSpec

#: Name of the function tool that carries the choice.
BRANCH_TOOL_NAME = "choose_branch"


def branch_schema(branches: Mapping[str, str], allow_multiple: bool) -> dict[str, Any]:
    """The JSON Schema of a choice: ``{"branch": <task id>}`` or ``{"branches": [<task id>, ...]}``, + reason."""
    ids = list(branches)
    options = "\n".join(f"- {task_id}: {when}" for task_id, when in branches.items())
    item = {"type": "string", "enum": ids}
    if allow_multiple:
        key = "branches"
        choice: dict[str, Any] = {
            "type": "array",
            "items": item,
            "minItems": 1,
            "uniqueItems": True,
            "description": f"Every task to run next (one or more). Options:\n{options}",
        }
    else:
        key = "branch"
        choice = {**item, "description": f"The one task to run next. Options:\n{options}"}
    return {
        "type": "object",
        "description": "Choose what runs next.",
        "properties": {key: choice, "reason": {"type": "string", "description": "Why, in one sentence."}},
        "required": [key],
    }


class AgentChatBranchOperator(AgentChatCompletionOperator, BranchMixIn):
    """Ask the agent which downstream task(s) to run; skip the rest the way ``BaseBranchOperator`` does.

    :param branches: ``{"task_id": "when to choose it", ...}``: the downstream tasks (or task groups) the agent
        may choose, each with a description the agent reads (templated).
    :param allow_multiple: let the agent choose one or more branches (default: exactly one).

    Every other keyword of :class:`AgentChatCompletionOperator` applies (``prompt``, ``system_prompt``,
    ``output_strategy``, ``output_retries``, ``deferrable``, body fields...), except ``output_schema``, which
    this operator builds from ``branches``. XCom: key ``choice`` holds the validated choice (with the agent's
    ``reason``); ``response`` and ``usage`` as usual. Downstream tasks not chosen are skipped (so tasks
    after them follow their trigger rules).
    """

    inherits_from_skipmixin = True
    template_fields: Sequence[str] = (*AgentChatCompletionOperator.template_fields, "branches")
    ui_color = "#fbe8d0"

    def __init__(self, *, branches: Mapping[str, str], allow_multiple: bool = False, **kwargs: Any) -> None:
        if kwargs.get("output_schema") is not None:
            raise ValueError("AgentChatBranchOperator builds its output schema from branches; do not pass one")
        super().__init__(**kwargs)
        if not isinstance(branches, Mapping) or not branches:
            raise ValueError("branches must be a non-empty mapping of task id -> when to choose it")
        for task_id, when in branches.items():
            if not isinstance(task_id, str) or not isinstance(when, str):
                raise ValueError(f"branches maps task ids to descriptions (strings); got {task_id!r}: {when!r}")
        self.branches = dict(branches)
        self.allow_multiple = allow_multiple

    def output_spec(self) -> OutputSpec:
        from airflow_agentchat.exceptions import InvalidRequestError
        from airflow_agentchat.structured_output import OutputSpec

        if self.has_dag():
            known = set(self.downstream_task_ids) | set(self.dag.task_group_dict)
            unknown = sorted(set(self.branches) - known)
            if unknown:
                raise InvalidRequestError(
                    [("branches", f"{', '.join(unknown)} not downstream of {self.task_id} (set them downstream)")]
                )
        return OutputSpec.build(
            branch_schema(self.branches, self.allow_multiple),
            strategy=self.output_strategy,
            retries=self.output_retries,
            name=BRANCH_TOOL_NAME,
        )

    def output_value(self, value: Any, context: Context) -> Any:
        chosen = value["branches"] if self.allow_multiple else value["branch"]
        self.log.info("The agent chose %s: %s", chosen, value.get("reason") or "(no reason given)")
        context["ti"].xcom_push(key="choice", value=value)
        return self.do_branch(context, chosen)
