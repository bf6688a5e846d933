"""Review and retries under a real Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor).

One stack for the module (``dev.ui.AirflowStack``, what ``make ui`` runs), one run of
``tests/dags/agentchat_review_cases.py``. The test drives the reviews the way a person's UI does, through
Airflow's human-in-the-loop REST API (``/api/v2/dags/.../hitlDetails``): approve, edit (valid and invalid
against the output schema), reject, and a timeout that applies ``approval_default``.

The same run holds the retry test: ``tool_retry`` calls a tool that counts its calls in a file, twice, and
the scripted server fails the third request once. Airflow retries the task in a new process (the
LocalExecutor starts one per try), which resumes from the task state store: the tool is not called again
and no answered request is sent again. (``airflow dags test`` runs retries in one process, which could
hide state kept in memory; ``airflow tasks test`` does not retry at all.)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Recorded, ScriptedServer
from suite import CANARY_KEY

from airflow_agentchat.compat import HAS_AWAITING_INPUT

# These reviews wait in awaiting_input and resume from the task state store (both Airflow 3.3); on 3.1 and 3.2 a
# review defers to the standard provider's HITLTrigger instead, and a retry starts over.
pytestmark = pytest.mark.skipif(not HAS_AWAITING_INPUT, reason="the review cases need Airflow >= 3.3 (awaiting_input)")

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "agentchat_review_cases"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
REVIEWED = ("approve_text", "edit_structured", "edit_invalid", "reject", "timeout_default")


def _reply(message: dict[str, Any]) -> tuple[int, dict, bytes]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE}
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


class Agent:
    """The scripted agent: answers by the task's tag in the first user message; fails ``tool_retry`` once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failed_once = False
        self.requests: dict[str, list[dict]] = {}

    def __call__(self, recorded: Recorded) -> Any:
        body = json.loads(recorded.body)
        messages = body["messages"]
        first = next(m["content"] for m in messages if m["role"] == "user")
        tag = first[1 : first.index("]")]
        with self.lock:
            self.requests.setdefault(tag, []).append(body)
        if tag == "tool_retry":
            done = sum(1 for m in messages if m["role"] == "tool")
            if done < 2:
                step = f"step{done + 1}"
                call = {"id": f"c{done}", "type": "function", "function": {"name": "record_step", "arguments": ""}}
                call["function"]["arguments"] = json.dumps({"step": step})
                return _reply({"role": "assistant", "content": None, "tool_calls": [call]})
            with self.lock:
                if not self.failed_once:
                    self.failed_once = True
                    return 500, {"content-type": "application/json"}, b'{"error": {"message": "overloaded"}}'
            return _reply({"role": "assistant", "content": "Both steps recorded."})
        if tag.startswith("edit_"):
            return _reply({"role": "assistant", "content": '{"message": "Sorry for the delay.", "refund_usd": 5}'})
        return _reply({"role": "assistant", "content": f"Answer for {tag}."})


class Stack:
    """The module's Airflow, with helpers for the REST calls the tests make."""

    def __init__(self, home: Path) -> None:
        from dev.ui import AirflowStack, free_port, stack_env

        self.home = home
        self.agent = Agent()
        self.server = ScriptedServer(responder=self.agent).start()
        dags = home / "dags"
        dags.mkdir(parents=True)
        (dags / f"{DAG_ID}.py").symlink_to(ROOT / "tests" / "dags" / f"{DAG_ID}.py")
        self.work = home / "work"
        self.work.mkdir()
        port = free_port()
        login = {"password": "stack-admin-pw", "jwt_secret": "stack-jwt-secret-for-tests-only-0123456789"}
        self.env = stack_env(home, port, login, dags_folder=dags)
        self.env.update(
            {
                "AIRFLOW_CONN_AGENTCHAT_SCRIPTED": json.dumps(
                    {"conn_type": "agentchat", "host": self.server.url, "password": CANARY_KEY}
                ),
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1",  # the review timeout sweep
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
                "AGENTCHAT_TEST_DIR": str(self.work),
                "PYTHONPATH": os.pathsep.join([str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            }
        )
        self.stack = AirflowStack(self.env, port=port, logs=home / "logs-components")
        self._token: str | None = None

    def start(self) -> None:
        import subprocess

        migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, capture_output=True)
        assert migrated.returncode == 0, migrated.stderr.decode(errors="replace")[-3000:]
        not_ready = self.stack.start()
        assert not not_ready, f"not healthy: {not_ready}\n{self.tails()}"

    def stop(self) -> None:
        self.stack.stop()
        self.server.stop()

    def tails(self) -> str:
        logs = self.home / "logs-components"
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(logs.glob("*.log")))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        if self._token is None:
            self._token = self.stack.api.token("admin", "stack-admin-pw")
        request = urllib.request.Request(
            f"{self.stack.url}/api/v2{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def exit_seen(self, task_id: str) -> bool:
        """Whether the scheduler has handled the exit of the process that parked ``task_id``.

        Airflow 3.3's scheduler marks a task FAILED ("state changed externally") when that executor event is
        processed after a response already re-queued the task (same try number); people do not answer within
        that second, a test does. So the test answers only once the scheduler has seen the exit.
        """
        log = (self.home / "logs-components" / "scheduler.log").read_text(errors="replace")
        return f"state success for task instance TaskInstanceKey(dag_id='{DAG_ID}', task_id='{task_id}'" in log

    def wait(self, what: str, check: Any, timeout: float = 240) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                value = None
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}\n{self.tails()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("review-stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def run(stack: Stack) -> dict[str, Any]:
    """Trigger the DAG, answer the reviews as they appear, wait for the run to finish; what the tests read."""
    stack.wait("the DAG to be parsed", lambda: stack.call("GET", f"/dags/{DAG_ID}"))
    stack.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run_id = stack.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})["dag_run_id"]
    base = f"/dags/{DAG_ID}/dagRuns/{run_id}"
    reviews: dict[str, dict] = {}
    responses = {
        "approve_text": lambda d: {"chosen_options": ["Approve"], "params_input": _inputs(d)},
        "edit_structured": lambda d: {
            "chosen_options": ["Approve"],
            "params_input": _inputs(d, answer={"message": "Sorry! Refund on its way.", "refund_usd": 7.5}),
        },
        "edit_invalid": lambda d: {
            "chosen_options": ["Approve"],
            "params_input": _inputs(d, answer={"message": "", "refund_usd": -3}),
        },
        "reject": lambda d: {"chosen_options": ["Reject"], "params_input": _inputs(d, comment="Too curt; apologise.")},
    }

    def answer_reviews() -> bool:
        states = {ti["task_id"]: ti["state"] for ti in stack.call("GET", f"{base}/taskInstances")["task_instances"]}
        for task_id, respond in responses.items():
            if task_id not in reviews and states.get(task_id) == "awaiting_input" and stack.exit_seen(task_id):
                detail = stack.call("GET", f"{base}/taskInstances/{task_id}/-1/hitlDetails")
                reviews[task_id] = {"detail": detail, "state_while_waiting": states[task_id]}
                stack.call("PATCH", f"{base}/taskInstances/{task_id}/-1/hitlDetails", respond(detail))
        if "timeout_default" not in reviews and states.get("timeout_default") == "awaiting_input":
            reviews["timeout_default"] = {"state_while_waiting": "awaiting_input"}
        run_state = stack.call("GET", base)["state"]
        return run_state in ("success", "failed")

    stack.wait("the run to finish", answer_reviews, timeout=420)
    tis = {ti["task_id"]: ti for ti in stack.call("GET", f"{base}/taskInstances")["task_instances"]}

    def xcom(task_id: str, key: str) -> Any:
        try:
            return stack.call("GET", f"{base}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true")["value"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def log(task_id: str) -> str:
        try_number = tis[task_id]["try_number"]
        content = stack.call("GET", f"{base}/taskInstances/{task_id}/logs/{try_number}?full_content=true")
        return json.dumps(content)

    return {"tis": tis, "reviews": reviews, "xcom": xcom, "log": log, "agent": stack.agent, "work": stack.work}


def _inputs(detail: dict, **changes: Any) -> dict[str, Any]:
    """The form as the reviewer leaves it: every field's value, with ``changes`` applied."""
    values = {name: param.get("value") for name, param in (detail.get("params") or {}).items()}
    return {**values, **changes}


# ---------------------------------------------------------------------------------------------- review


def test_the_task_waits_in_awaiting_input_showing_the_answer(run):
    detail = run["reviews"]["approve_text"]["detail"]
    assert run["reviews"]["approve_text"]["state_while_waiting"] == "awaiting_input"
    assert detail["options"] == ["Approve", "Reject"]
    assert "Answer for approve_text." in detail["body"]
    assert detail["params"]["answer"]["value"] == "Answer for approve_text."
    structured = run["reviews"]["edit_structured"]["detail"]["params"]["answer"]
    assert structured["value"] == {"message": "Sorry for the delay.", "refund_usd": 5.0}


def test_approve_returns_the_answer_and_it_was_paid_once(run):
    assert run["tis"]["approve_text"]["state"] == "success"
    assert run["xcom"]("approve_text", "return_value") == "Answer for approve_text."
    assert run["xcom"]("approve_text", "approval")["decision"] == "approved"
    assert run["xcom"]("approve_text", "approval")["by"] == "admin"
    for task_id in REVIEWED:  # waiting for a person never sent the request again
        assert len(run["agent"].requests[task_id]) == 1, task_id


def test_edit_returns_the_edited_answer_validated(run):
    assert run["tis"]["edit_structured"]["state"] == "success"
    assert run["xcom"]("edit_structured", "return_value") == {"message": "Sorry! Refund on its way.", "refund_usd": 7.5}
    assert run["xcom"]("edit_structured", "approval")["decision"] == "edited"


def test_an_edit_that_breaks_the_output_schema_fails_the_task_naming_the_fields(run):
    assert run["tis"]["edit_invalid"]["state"] == "failed"
    assert run["xcom"]("edit_invalid", "approval")["decision"] == "invalid_edit"
    log = run["log"]("edit_invalid")
    assert "The edited answer does not match the output schema" in log
    assert "message: String should have at least 1 character" in log and "refund_usd:" in log


def test_reject_fails_the_task_with_the_reviewers_comment(run):
    assert run["tis"]["reject"]["state"] == "failed"
    assert run["xcom"]("reject", "approval") == {
        "decision": "rejected",
        "by": "admin",
        "comment": "Too curt; apologise.",
    }
    assert "The answer was rejected (by admin): Too curt; apologise." in run["log"]("reject")


def test_a_timeout_applies_approval_default(run):
    assert run["reviews"]["timeout_default"]["state_while_waiting"] == "awaiting_input"
    assert run["tis"]["timeout_default"]["state"] == "success"
    assert run["xcom"]("timeout_default", "return_value") == "Answer for timeout_default."
    record = run["xcom"]("timeout_default", "approval")
    assert record["decision"] == "approved" and record["timed_out"] is True and record["by"] is None


# ---------------------------------------------------------------------------------------------- retry


def test_a_retry_in_a_new_process_resumes_without_repeating_a_tool_or_a_paid_answer(run):
    ti = run["tis"]["tool_retry"]
    assert ti["state"] == "success" and ti["try_number"] == 2
    calls = (run["work"] / "record_step.calls").read_text().splitlines()
    assert [line.split()[0] for line in calls] == ["step1", "step2"]  # each step recorded once, across both tries
    sent = run["agent"].requests["tool_retry"]
    # round 1, round 2, the failed third request, and that request again from the retry: nothing else
    assert [sum(m["role"] == "tool" for m in body["messages"]) for body in sent] == [0, 1, 2, 2]
    assert sent[3]["messages"] == sent[2]["messages"]
    assert run["xcom"]("tool_retry", "return_value") == "Both steps recorded."
    assert run["xcom"]("tool_retry", "usage")["total_tokens"] == 3 * USAGE["total_tokens"]  # three paid answers
    trace = run["xcom"]("tool_retry", "tool_trace")
    assert [(e["round"], e["name"], e["arguments"]) for e in trace] == [
        (1, "record_step", {"step": "step1"}),
        (2, "record_step", {"step": "step2"}),
    ]
    assert "Resuming the conversation an earlier try saved: 2 tool round(s) done" in run["log"]("tool_retry")


def test_the_key_stays_out_of_every_xcom_and_review(run):
    seen = json.dumps([run["reviews"], [run["xcom"](t, "tool_trace") for t in ("tool_retry",)]])
    assert CANARY_KEY not in seen
