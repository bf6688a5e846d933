"""Batch prompting: many prompts through an agent connection (and its fallbacks), bounded, rate limited and resumable.

The pieces, one job per module::

    items.py   input forms (strings, message lists, {"id", "prompt"|"messages", ...}) -> BatchItem, stable ids
    store.py   resumable JSONL results in object storage: rolling part files, torn-line tolerant, compose
    runner.py  the async engine: N requests in flight through the hooks, failover per item, progress
    lanes.py   one lane per connection: its hook, rate gate, prices, metrics, cache, breaker; the priced budget
    breaker.py the circuit breaker of one connection (decisions only)
    cache_io.py  response-cache lookups and batched writes off the event loop
    rate.py    request pacing and the token budget, shared by every request of a batch
    shards.py  split a JSONL input into shard files for dynamic task mapping
    forecast.py  the items, tokens and cost a run will send, before it sends anything

:class:`airflow_agentchat.operators.batch.AgentChatBatchOperator` wires them together; the response cache it may
use is :mod:`airflow_agentchat.response_cache`. Nothing here builds
URLs or headers: every request goes through :class:`~airflow_agentchat.hooks.agent_chat.AgentChatHook`.
"""

from __future__ import annotations

from airflow_agentchat.batch.shards import split_jsonl

__all__ = ["split_jsonl"]
