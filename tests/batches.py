"""What the in-process batch tests share: an operator writing to the test's folder, and its result lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The connection the batch tests define (through ``make_conn``) to the session dev server.
CONN = "agentchat_batch"


def make_op(tmp_path: Path, **kwargs: Any) -> Any:
    """An ``AgentChatBatchOperator`` on ``CONN`` writing ``tmp_path/out.jsonl``; keywords override."""
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    kwargs.setdefault("agentchat_conn_id", CONN)
    kwargs.setdefault("progress_interval", 0.5)
    return AgentChatBatchOperator(task_id="batch", **kwargs)


def lines_of(path: Path) -> list[dict]:
    """The JSON result lines of an output file."""
    return [json.loads(line) for line in path.read_text().splitlines()]
