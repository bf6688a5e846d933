"""OpenLineage units (lineage.py): dataset names follow the OpenLineage naming, hosts never carry credentials,
and the operators import without OpenLineage."""

from __future__ import annotations

import pytest
from fakes import Imported, import_in_fresh_python
from suite import CANARY_KEY

from airflow_agentchat.lineage import dataset_name, host_of


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/in.jsonl", ("file", "/data/in.jsonl")),
        ("/data/in.jsonl", ("file", "/data/in.jsonl")),
        ("s3://bucket/prompts/in.jsonl", ("s3://bucket", "prompts/in.jsonl")),
        ("s3://aws_conn@bucket/prompts/in.jsonl", ("s3://bucket", "prompts/in.jsonl")),
        ("gs://bucket/a/b.jsonl", ("gs://bucket", "a/b.jsonl")),
        (
            "abfss://container@account.dfs.core.windows.net/x.jsonl",
            ("abfss://container@account.dfs.core.windows.net", "x.jsonl"),
        ),
    ],
)
def test_dataset_names_follow_the_openlineage_naming(uri, expected):
    assert dataset_name(uri) == expected


def test_host_never_carries_credentials_or_path():
    assert (
        host_of(f"https://user:{CANARY_KEY}@agent.example.com:8443/api/v1?key={CANARY_KEY}") == "agent.example.com:8443"
    )


def test_operators_import_without_openlineage(tmp_path):
    """The lineage classes load only inside get_openlineage_facets_on_complete."""
    imported = import_in_fresh_python(
        "import airflow_agentchat.operators.batch, airflow_agentchat.operators.agent_chat, airflow_agentchat.lineage"
    )
    assert Imported.matching(imported.loaded, ("openlineage",)) == []
