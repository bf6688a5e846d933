"""Images and prompt caching from a DAG: ``@task.agent_chat`` with ``images=`` (a local file, templated, and an
https URL) and ``cache_prompt``; tests/integration/test_media.py writes the image and runs it.

The image folder comes from ``AGENTCHAT_EXAMPLE_OUTPUT_DIR`` (the tests' AIRFLOW_HOME).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

OUT = os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR", "/tmp")
SYSTEM = "You describe pictures for an insurance claim, in one short sentence. " * 30

with DAG(
    dag_id="agentchat_media_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={"picture": "dent.png"},
):

    @task.agent_chat(
        system_prompt=SYSTEM,
        cache_prompt="5m",
        images=[OUT + "/media_cases/{{ params.picture }}", "https://example.com/claims/{{ ds }}.png"],
    )
    def first() -> str:
        return "describe these"

    @task.agent_chat(system_prompt=SYSTEM, cache_prompt="5m", images=OUT + "/media_cases/{{ params.picture }}")
    def second() -> str:
        return "and this one"

    first() >> second()
