"""Batch DAGs for tests that play a hostile environment: injected faults, SIGKILL, two tasks on one output.

Paths come from params (``airflow dags test -c '{...}'`` / ``airflow tasks test -t '{...}'``) and the
connection ``agentchat_faults`` from ``AIRFLOW_CONN_AGENTCHAT_FAULTS``, so tests point them at their own
fault server and temporary folders. ``objtest://`` is a local folder behind a filesystem that refuses to
append, standing in for an object store in a test that must survive a process kill.
"""

from __future__ import annotations

import fsspec
import pendulum
from airflow.sdk import DAG
from airflow.sdk.io import attach
from fsspec.implementations.local import LocalFileSystem

from airflow_agentchat.operators.batch import AgentChatBatchOperator


class NoAppendFileSystem(LocalFileSystem):
    """Local files that behave like an object store: no append."""

    protocol = ("objtest",)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_mkdir", True)  # object stores have no folders to make
        super().__init__(*args, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("object stores cannot append")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("objtest", NoAppendFileSystem, clobber=True)
attach("objtest", fs=NoAppendFileSystem())

START = pendulum.datetime(2026, 1, 1, tz="UTC")
PATHS = {"input_path": "", "output_path": ""}

with DAG(dag_id="agentchat_batch_faults", start_date=START, schedule=None, params=PATHS):
    AgentChatBatchOperator(
        task_id="batch",
        input_path="{{ params.input_path }}",
        output_path="{{ params.output_path }}",
        agentchat_conn_id="agentchat_faults",
        max_concurrency=16,
        timeout=1,  # the server's slow fault answers after 2 s
        max_retries=6,
        progress_interval=2,
    )

with DAG(dag_id="agentchat_batch_kill", start_date=START, schedule=None, params=PATHS):
    AgentChatBatchOperator(  # default durability settings: that is what the kill test is about
        task_id="batch",
        input_path="{{ params.input_path }}",
        output_path="{{ params.output_path }}",
        agentchat_conn_id="agentchat_faults",
        max_concurrency=8,
        progress_interval=1,
    )

with DAG(
    dag_id="agentchat_batch_two_writers",
    start_date=START,
    schedule=None,
    params={"input_a": "", "input_b": "", "output_path": ""},
):
    for name in ("a", "b"):
        AgentChatBatchOperator(
            task_id=f"writer_{name}",
            input_path=f"{{{{ params.input_{name} }}}}",
            output_path="{{ params.output_path }}",
            agentchat_conn_id="agentchat_faults",
            max_concurrency=4,
            retries=0,
        )
