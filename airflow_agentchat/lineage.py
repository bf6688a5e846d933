"""OpenLineage for the operators: the datasets a task read and wrote, and a run facet of its requests.

Nothing here imports OpenLineage at module level: the provider works without
``apache-airflow-providers-openlineage``, and the classes are loaded only when its listener asks an operator
for lineage (``get_openlineage_facets_on_complete``). :func:`dataset_name` is pure and names a storage URI the
way the OpenLineage naming spec does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

FACET_KEY = "agentChat"
_USERINFO_SCHEMES = ("abfs", "abfss", "wasb", "wasbs")


def dataset_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of a storage URI: ``file`` + absolute path locally, ``<scheme>://<bucket>`` + key
    on object storage. An Airflow connection id in the URI (``s3://aws_conn@bucket/key``) is not part of it
    (Azure's ``container@account`` is)."""
    text = str(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("", "file", "local"):
        path = parts.path if scheme in ("file", "local") else text
        if scheme in ("file", "local") and parts.netloc and not parts.path:
            path = parts.netloc
        return "file", os.path.abspath(path)
    # Azure names the container before the "@"; elsewhere that is an Airflow connection id.
    bucket = parts.netloc if scheme in _USERINFO_SCHEMES else parts.netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{bucket}", parts.path.lstrip("/")


def host_of(base_url: str | None) -> str | None:
    """The endpoint's host (and port): never a path, a query or credentials."""
    if not base_url:
        return None
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


@functools.cache
def _facet_class() -> type:
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class AgentChatRunFacet(RunFacet):
        """What an agent chat task sent: where, which model, how many requests, tokens, errors and cost."""

        endpointHost: str | None = None  # OpenLineage facets use camelCase fields
        model: str | None = None
        requests: int = 0
        attempts: int = 0
        promptTokens: int = 0
        completionTokens: int = 0
        totalTokens: int = 0
        cacheCreatedInputTokens: int = 0  # prompt tokens written to the prompt cache (part of promptTokens)
        cacheReadInputTokens: int = 0  # prompt tokens read from it (part of promptTokens)
        errors: int = 0
        errorTypes: dict[str, int] = attrs.field(factory=dict)
        cost: float | None = None
        connId: str | None = None  # the connection that answered (a fallback after a failover)
        answersByConn: dict[str, int] = attrs.field(factory=dict)  # a batch: answers per connection

        @staticmethod
        def _get_schema() -> str:
            return "urn:airflow-agentchat:facet:AgentChatRunFacet:1"

    return AgentChatRunFacet


def operator_lineage(
    facts: Mapping[str, Any], inputs: Sequence[tuple[str, str]] = (), outputs: Sequence[tuple[str, str]] = ()
) -> Any:
    """An ``OperatorLineage`` of datasets (``(namespace, name)`` pairs) and the agent chat run facet."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    usage = facts.get("usage") or {}
    errors = dict(facts.get("errors") or {})
    facet = _facet_class()(
        endpointHost=host_of(facts.get("host")),
        model=facts.get("model"),
        requests=int(facts.get("requests") or 0),
        attempts=int(facts.get("attempts") or 0),
        promptTokens=int(usage.get("prompt_tokens") or 0),
        completionTokens=int(usage.get("completion_tokens") or 0),
        totalTokens=int(usage.get("total_tokens") or 0),
        cacheCreatedInputTokens=int(usage.get("cache_created_input_tokens") or 0),
        cacheReadInputTokens=int(usage.get("cache_read_input_tokens") or 0),
        errors=sum(errors.values()),
        errorTypes=errors,
        cost=facts.get("cost"),
        connId=facts.get("conn_id"),
        answersByConn=dict(facts.get("answers_by_conn") or {}),
    )
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
        run_facets={FACET_KEY: facet},
    )
