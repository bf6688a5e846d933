"""Findings where the docs promised something the code did not do (issue 20), each run through real Airflow."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def cases(run_dag) -> dict:
    return run_dag("agentchat_docs_cases", check=False)


def test_a_decorated_function_annotated_dict_returns_the_answer(cases):
    assert cases[("as_dict", -1, "return_value")] == "Echo: a dict request", cases["_log"][-3000:]


def test_a_streamed_answer_logs_attempts_and_request_id(cases):
    # The streamed task is the DAG's only plain AgentChatCompletionOperator (the other is the decorated one).
    lines = [
        line
        for line in cases["_log"].splitlines()
        if "Agent chat completion:" in line and "agent_chat.AgentChatCompletionOperator" in line
    ]
    assert len(lines) == 1, cases["_log"][-3000:]
    assert re.search(r"attempts=1, request_id=req_\w+", lines[0]), lines[0]


def test_the_readme_async_snippet_runs_and_closes_its_connections(devserver, make_conn):
    """The README's asyncio example, run as written: it answers and leaves no unclosed-connection warning."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    (snippet,) = [block for block in blocks if "async with AgentChatHook" in block]
    make_conn("agentchat_default", devserver.url)
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "always", "-c", snippet],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Echo: Summarise yesterday's failed loads." in proc.stdout
    assert "unclosed" not in proc.stderr.lower(), proc.stderr[-3000:]


def test_the_hook_closes_itself_in_a_with_block(devserver, make_conn):
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    with AgentChatHook(make_conn("agentchat_with", devserver.url)) as hook:
        assert hook.create_chat_completion([{"role": "user", "content": "hi"}]).text == "Echo: hi"
        client = hook.client
    assert hook.client is not client  # closed: the next use opens new connections


def test_an_example_creates_its_output_folder(run_dag, tmp_path):
    """example_agentchat_chain writes its result file into a folder that does not exist yet."""
    out = tmp_path / "fresh" / "folder"
    result = run_dag("example_agentchat_chain", env={"AGENTCHAT_EXAMPLE_OUTPUT_DIR": str(out)}, check=False)
    assert result["_returncode"] == 0, result["_log"][-3000:]
    assert (out / "example_agentchat_chain.jsonl").read_text().count("\n") >= 1
