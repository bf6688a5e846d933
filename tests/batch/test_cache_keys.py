"""A batch's plain prompts are keyed by a body written from a template, never built for a hit: that body must
be byte for byte what the batch sends.

Each case runs ``AgentChatBatchOperator`` against a local server that records every request body as it
arrives, with the response cache on (so the runner asks the cache for every item's key). The key the cache
used for an item must be the key of the body the server received for it, and a plain prompt's template body
must be that very body, for every shape of request: tools, output schemas in both strategies, ``cache_prompt``
marks, sampling fields, ``extra_body``, images and content parts, per-item fields, and prompts full of
characters JSON escapes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_agentchat.batch.items import Prepared, prepare
from airflow_agentchat.response_cache import ResponseCache

CONN = "agentchat_fast_key"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw=="
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


class Answer(BaseModel):
    answer: str


def _reply(recorded: Any) -> tuple[int, dict[str, str], bytes]:
    """A completion valid for every case: JSON text, and the output tool's call when the request has it."""
    message: dict[str, Any] = {"role": "assistant", "content": '{"answer": "ok"}'}
    tools = json.loads(recorded.body).get("tools") or []
    if any(tool["function"]["name"] == "final_result" for tool in tools):
        call = {"name": "final_result", "arguments": '{"answer": "ok"}'}
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": call}]
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    body = {"id": "c", "model": "m", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    return 200, {"content-type": "application/json"}, json.dumps({**body, "usage": usage}).encode()


def _tagged(text: str, i: int) -> str:
    return f"{text} <item-{i}-end>"


PROMPTS = [
    'He said "hi"\n\tthen left \\ / ',
    "é ü 中文 😀 \u2028 \x00 \x1f \x7f",
    "",
    "plain",
]


def _items() -> list[Any]:
    """Plain prompts (strings and objects that add only an id or context), then items built the full way."""
    items: list[Any] = [_tagged(text, i) for i, text in enumerate(PROMPTS)]
    n = len(items)
    items += [
        {"id": "with-context", "prompt": _tagged("joined back", n), "context": {"row": 1}},
        {"prompt": _tagged("an image", n + 1), "images": [PNG]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": _tagged("parts", n + 2)}]}]},
        {"prompt": _tagged("own fields", n + 3), "temperature": 0, "seed": 11, "max_tokens": 300},
        {"prompt": _tagged("own system prompt", n + 4), "system_prompt": "Be terse."},
    ]
    return items


PLAIN = len(PROMPTS) + 1  # the first items: their requests come from the template

CASES = {
    "temperature only": {"temperature": 0},
    "sampling fields, system prompt, cache_prompt": {
        "system_prompt": 'You label "tickets".\n',
        "cache_prompt": "5m",
        "seed": 7,
        "top_p": 0.5,
        "max_tokens": 300,
        "stop": ["\n\n"],
        "presence_penalty": 0.25,
        "metadata": {"team": "data"},
        "logit_bias": {"50256": -100},
        "extra_body": {"x_vendor": {"mode": "strict"}},
        "model": "m1",
    },
    "schema dict, tool strategy": {"temperature": 0, "output_schema": SCHEMA, "output_retries": 0},
    "pydantic schema, json strategy, cache_prompt": {
        "temperature": 0,
        "output_schema": Answer,
        "output_strategy": "json",
        "system_prompt": "Answer in JSON.",
        "cache_prompt": "1h",
    },
    "tools of the task": {"temperature": 0, "tools": [TOOL], "tool_choice": "none", "max_completion_tokens": 256},
    "non-deterministic, cached on request": {"temperature": 0.7, "cache_nondeterministic": True},
}


@pytest.fixture()
def recorder(scripted: Any, make_conn: Any) -> Any:
    scripted.script()
    scripted.responder = _reply
    make_conn(CONN, scripted.url)
    yield scripted
    scripted.responder = None


def _spy_keys(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, tuple[str | None, bytes | None]], list[Any]]:
    """Record, per item id, the key the runner got from the cache and the template body the item carried."""
    seen: dict[str, tuple[str | None, bytes | None]] = {}
    caches: list[Any] = []
    key_of = ResponseCache.key_of

    def spy(self: ResponseCache, entry: Prepared) -> str | None:
        key = key_of(self, entry)
        seen[entry.id] = (key, entry.body)
        if self not in caches:
            caches.append(self)
        return key

    monkeypatch.setattr(ResponseCache, "key_of", spy)
    return seen, caches


def _run(tmp_path: Path, name: str, items: list[Any], **kwargs: Any) -> dict[str, Any]:
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    op = AgentChatBatchOperator(
        task_id="batch",
        agentchat_conn_id=CONN,
        prompts=items,
        output_path=f"file://{tmp_path}/{name}.jsonl",
        progress_interval=60,
        max_concurrency=4,
        **{"cache_path": f"file://{tmp_path}/cache-{name}", **kwargs},
    )
    return op.execute({"ti": None})  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(CASES))
def test_an_items_cache_key_is_the_key_of_the_body_it_was_sent_with(
    case: str, recorder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, caches = _spy_keys(monkeypatch)
    items = _items()
    summary = _run(tmp_path, "first", items, **CASES[case])
    assert summary["sent"] == len(items) and summary["succeeded"] == len(items)

    by_tag = {}  # item number -> the body the server received
    for recorded in recorder.requests:
        (tag,) = set(re.findall(rb"item-(\d+)-end", recorded.body))
        assert int(tag) not in by_tag, "one request per item"
        by_tag[int(tag)] = recorded.body
    assert sorted(by_tag) == list(range(len(items)))

    (cache,) = caches
    ids = {stable_id_or_explicit(item): i for i, item in enumerate(items)}
    assert set(seen) == set(ids)
    for item_id, (key, body) in seen.items():
        i = ids[item_id]
        sent = by_tag[i]
        assert key == cache.body_key(sent), f"item {i}: key differs from the key of the body sent"
        if i < PLAIN:
            assert body == sent, f"item {i}: the template body differs from the body sent"
        else:
            assert body is None, f"item {i} is not a plain prompt: it is keyed by its built request"
    assert cache._bodies, "no body was found to differ from its request"

    # The same batch again: every item found by the key its body gives, nothing sent.
    recorder.requests.clear()
    seen.clear()
    again = _run(tmp_path, "second", items, **{**CASES[case], "cache_path": f"file://{tmp_path}/cache-first"})
    assert (again["sent"], again["cached"], len(recorder.requests)) == (0, len(items), 0)


def stable_id_or_explicit(item: Any) -> str:
    from airflow_agentchat.batch.items import stable_id

    return str(item["id"]) if isinstance(item, dict) and "id" in item else stable_id(item)


def test_a_changed_prompt_schema_or_sampling_field_gives_another_template_key(recorder: Any, tmp_path: Path) -> None:
    from airflow_agentchat.models import build_request

    def keys(shared: dict[str, Any], prompts: list[str], system: str | None = None) -> list[str | None]:
        cache = ResponseCache(str(tmp_path / "c"), host="https://agent.example", schema=shared.pop("schema", None))
        work = prepare(prompts, build_request=build_request, system_prompt=system, shared=shared)
        return [cache.key_of(entry) for entry in work]

    base = keys({"temperature": 0}, ["a", "b"])
    assert len(set(base)) == 2 and None not in base
    assert keys({"temperature": 0}, ["a", "b"]) == base
    assert keys({"temperature": 0}, ["a ", "b"])[0] != base[0]
    assert keys({"temperature": 0, "top_p": 0.5}, ["a"])[0] != base[0]
    assert keys({"temperature": 0, "schema": SCHEMA}, ["a"])[0] != base[0]
    assert keys({"temperature": 0}, ["a"], system="Be brief.")[0] != base[0]
    assert keys({"temperature": 0.5}, ["a"]) == [None]  # not deterministic: not cached by default


def test_an_all_hit_batch_builds_no_request_of_its_items(
    recorder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    prompts = [f"question {i}" for i in range(40)]
    _run(tmp_path, "first", prompts, temperature=0)
    built = []
    build_request = AgentChatHook.build_request
    monkeypatch.setattr(
        AgentChatHook, "build_request", lambda self, *a, **k: built.append(1) or build_request(self, *a, **k)
    )
    again = _run(tmp_path, "second", prompts, temperature=0, cache_path=f"file://{tmp_path}/cache-first")
    assert (again["cached"], again["sent"]) == (40, 0)
    assert len(built) == 2  # the template and its check, once per batch


def test_a_prompt_that_cannot_be_encoded_is_still_rejected_before_sending(recorder: Any, tmp_path: Path) -> None:
    from airflow_agentchat.models import build_request

    work = list(prepare(["fine", "bad \ud800"], build_request=build_request, system_prompt=None, shared={}))
    assert isinstance(work[0], Prepared) and work[0].body is not None
    assert type(work[1]).__name__ == "Rejected" and "surrogate" in str(work[1].error)


def test_a_body_that_differs_from_its_request_is_caught_on_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_agentchat.models import build_request

    cache = ResponseCache(str(tmp_path / "c"), host="https://agent.example")
    request = build_request([{"role": "user", "content": "a"}], temperature=0)
    wrong = Prepared("x", request, body=b'{"messages":[]}', like=request)
    key = cache.key_of(wrong)
    assert key == cache.body_key(b'{"messages":[]}')
    with caplog.at_level(logging.WARNING):
        stored = cache.confirm(key, wrong)
    assert stored == cache.key(request) != key  # filed under the request that was sent
    assert "differs" in caplog.text
    assert cache.key_of(wrong) == cache.key(request)  # bodies are not trusted again
