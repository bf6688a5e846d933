"""AgentChatBranchOperator and ``@task.agent_chat_branch`` under ``airflow dags test`` against the dev server:
the chosen branch runs, the others are skipped."""

from __future__ import annotations

import pytest

BRANCHES = ("refund", "escalate", "reply")


def task_states(dag_id: str) -> dict[str, str]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        rows = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        return {ti.task_id: str(ti.state) for ti in rows}


@pytest.fixture(scope="module")
def cases(run_dag) -> dict:
    x = run_dag("agentchat_branch_cases")
    return {**x, "_states": task_states("agentchat_branch_cases")}


def test_the_chosen_branch_runs_and_the_others_are_skipped(cases):
    choice = cases[("pick", -1, "choice")]
    assert choice["branch"] in BRANCHES
    states = cases["_states"]
    assert states[choice["branch"]] == "success"
    assert {states[b] for b in BRANCHES if b != choice["branch"]} == {"skipped"}
    assert states["join"] == "success"  # trigger rule none_failed_min_one_success joins after the skip
    assert cases[("join", -1, "return_value")] == "joined"


def test_an_invalid_choice_is_repaired_and_usage_counts_both_rounds(cases):
    assert "Answer 1 does not match the output schema" in cases["_log"]
    assert "not-one-of-the-allowed-values" in cases["_log"]
    response = cases[("pick", -1, "response")]
    assert cases[("pick", -1, "usage")]["total_tokens"] > response["usage"]["total_tokens"]


def test_allow_multiple_returns_a_list_and_skips_the_rest(cases):
    chosen = cases[("multi", -1, "choice")]["branches"]
    assert chosen and set(chosen) <= {f"m_{b}" for b in BRANCHES}
    states = cases["_states"]
    for b in BRANCHES:
        assert states[f"m_{b}"] == ("success" if f"m_{b}" in chosen else "skipped")


def test_decorator_branches(cases):
    choice = cases[("decorated_pick", -1, "choice")]["branch"]
    states = cases["_states"]
    for b in BRANCHES:
        assert states[f"d_{b}"] == ("success" if f"d_{b}" == choice else "skipped")
    assert sum(states[f"d_{b}"] == "success" for b in BRANCHES) == 1
