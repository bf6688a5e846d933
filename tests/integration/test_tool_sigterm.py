"""Finding: a long tool round ignored SIGTERM. A real ``airflow dags test`` process is signalled mid-round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

CALLS = 60


def _answer(recorded) -> tuple[int, dict, bytes]:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "slow_step", "arguments": f'{{"step": "{i}"}}'}}
        for i in range(CALLS)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    body = {
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_sigterm_during_a_long_tool_round_ends_the_task(airflow_db, scripted, canary_key, tmp_path):
    scripted.script()
    scripted.responder = _answer
    steps = tmp_path / "steps.log"
    steps.touch()
    env = {
        **os.environ,
        "AGENTCHAT_TOOL_LOG": str(steps),
        "AIRFLOW_CONN_AGENTCHAT_DEFAULT": json.dumps(
            {"conn_type": "agentchat", "host": scripted.url, "password": canary_key}
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", "agentchat_tool_sigterm"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait(lambda: len(steps.read_text().split()) >= 2, 240), "the tool round never started"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)  # a generous bound; without the fix the round runs to its end
    finally:
        scripted.responder = None
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    ran = steps.read_text().split()
    assert len(ran) < CALLS, f"all {CALLS} calls ran after SIGTERM"
    assert "Stopped on request (SIGTERM) in tool round 1" in output
    assert len(scripted.requests) == 1  # the round was not finished, so nothing more was asked
