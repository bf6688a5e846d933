"""The response cache across runs (airflow_agentchat/response_cache.py) through the batch operator.

Every assertion is on what the dev server counted or on the files written: a hit is an item the server never
saw, and a miss one it saw exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeTI
from suite import make_bucket, rewrite_entry, stored_entries

from airflow_agentchat.batch.items import stable_id

CONN = "agentchat_cache"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture()
def conn(server, make_conn, canary_key) -> str:
    return make_conn(CONN, server.url)


def run(tmp_path: Path, out: str, prompts, **kwargs) -> dict:
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("cache_path", f"file://{tmp_path}/cache")
    kwargs.setdefault("temperature", 0)
    op = AgentChatBatchOperator(
        task_id="batch",
        agentchat_conn_id=CONN,
        prompts=prompts,
        output_path=f"file://{tmp_path}/{out}.jsonl",
        progress_interval=60,
        **kwargs,
    )
    return op.execute({"ti": FakeTI()})


def lines_of(path: Path) -> dict[str, dict]:
    return {rec["id"]: rec for rec in (json.loads(line) for line in path.read_text().splitlines())}


def sent(server) -> int:
    return server.stats(timestamps=False)["total"]


def test_an_unchanged_batch_sends_nothing_the_second_time_and_pays_nothing(conn, server, tmp_path):
    prompts = [f"question {i}" for i in range(40)]
    first = run(tmp_path, "one", prompts)
    assert sent(server) == 40 and first["cached"] == 0

    second = run(tmp_path, "two", prompts)
    assert sent(server) == 40  # not one request more
    assert second["sent"] == 0 and second["cached"] == 40 and second["succeeded"] == 40
    assert second["usage"]["total_tokens"] == 0 and second["run_usage"]["total_tokens"] == 0
    assert second["cached_usage"]["total_tokens"] == first["usage"]["total_tokens"] > 0
    before, after = lines_of(tmp_path / "one.jsonl"), lines_of(tmp_path / "two.jsonl")
    assert set(after) == {stable_id(p) for p in prompts}
    for item_id, line in after.items():
        assert line["cached"] is True and line["status"] == "ok" and line["attempts"] == 0
        assert line["text"] == before[item_id]["text"]
        assert line["usage"]["total_tokens"] == 0
        assert line["cached_usage"] == before[item_id]["usage"]
        assert line["response"] == before[item_id]["response"]


def test_k_changed_rows_send_exactly_k(conn, server, tmp_path):
    prompts = [{"id": str(i), "prompt": f"row {i}", "context": {"row": i}} for i in range(30)]
    run(tmp_path, "one", prompts)
    changed = [dict(p, prompt=p["prompt"] + " (edited)") if int(p["id"]) % 10 == 3 else p for p in prompts]
    # context is not part of the key: a changed context alone is still a hit, and is copied to the line
    changed[0] = dict(changed[0], context={"row": "renamed"})
    server.reset()
    summary = run(tmp_path, "two", changed)
    stats = server.stats(timestamps=False)
    assert stats["total"] == 3 and sorted(stats["by_prompt"]) == [
        "row 13 (edited)",
        "row 23 (edited)",
        "row 3 (edited)",
    ]
    assert summary["cached"] == 27 and summary["sent"] == 3
    assert lines_of(tmp_path / "two.jsonl")["0"]["context"] == {"row": "renamed"}


def test_a_changed_schema_or_sampling_field_misses(conn, server, tmp_path):
    prompts = [f"q{i}" for i in range(5)]
    run(tmp_path, "one", prompts)
    run(tmp_path, "two", prompts, top_p=0.5)
    assert sent(server) == 10
    run(tmp_path, "three", prompts, output_schema=SCHEMA)
    assert sent(server) == 15
    other = {**SCHEMA, "properties": {"answer": {"type": "string", "maxLength": 5000}}}
    run(tmp_path, "four", prompts, output_schema=other)
    assert sent(server) == 20
    run(tmp_path, "five", prompts, output_schema=other)  # and the same schema again hits
    assert sent(server) == 20


def test_a_nondeterministic_request_is_not_cached_unless_asked(conn, server, tmp_path):
    prompts = ["a", "b"]
    for out in ("one", "two"):  # no temperature: the endpoint's default, which is not 0
        run(tmp_path, out, prompts, temperature=None)
    run(tmp_path, "three", prompts, temperature=0.7)
    run(tmp_path, "four", prompts, temperature=0.7)
    assert sent(server) == 8
    assert stored_entries(tmp_path / "cache") == {}
    run(tmp_path, "five", prompts, temperature=0.7, seed=7)  # a seed makes it deterministic
    run(tmp_path, "six", prompts, temperature=0.7, seed=7)
    assert sent(server) == 10
    run(tmp_path, "seven", prompts, temperature=0.7, cache_nondeterministic=True)
    run(tmp_path, "eight", prompts, temperature=0.7, cache_nondeterministic=True)
    assert sent(server) == 12


def test_two_writers_at_once_lose_no_entry(conn, server, tmp_path):
    prompts = [f"shared {i}" for i in range(300)]
    halves = [prompts[::2] + prompts[:50], prompts[1::2] + prompts[:50]]  # overlapping: same keys at once
    errors: list[BaseException] = []

    def shard(index: int) -> None:
        try:
            run(tmp_path, f"shard{index}", halves[index], max_concurrency=8)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(stored_entries(tmp_path / "cache")) == 300
    server.reset()
    summary = run(tmp_path, "all", prompts)
    assert sent(server) == 0 and summary["cached"] == 300


def test_a_corrupted_or_foreign_entry_is_a_miss_not_a_crash(conn, server, tmp_path):
    prompts = [f"c{i}" for i in range(6)]
    run(tmp_path, "one", prompts)
    cache = tmp_path / "cache"
    entries = sorted(stored_entries(cache).items())
    assert len(entries) == 6
    (k0, d0), (k1, _), (k2, _), (k3, _), (_, d4), (k5, d5) = entries
    rewrite_entry(cache, k0, d0[:25])  # torn
    rewrite_entry(cache, k1, b"\xff\xfe not json")
    rewrite_entry(cache, k2, json.dumps({"format": "agentchat-response-cache/1", "key": "another"}).encode())
    rewrite_entry(cache, k3, d4)  # another key's entry under this key
    rewrite_entry(cache, k5, d5.replace(b"Echo", b"Ekho"))  # changed, same length: the hash tells
    server.reset()
    summary = run(tmp_path, "two", prompts)
    assert sent(server) == 5 and summary["cached"] == 1 and summary["succeeded"] == 6
    assert "Ekho" not in (tmp_path / "two.jsonl").read_text()
    server.reset()
    run(tmp_path, "three", prompts)  # the misses were written again, whole
    assert sent(server) == 0


def test_ttl_and_modes(conn, server, tmp_path):
    prompts = ["m1", "m2"]
    run(tmp_path, "one", prompts, cache_mode="read_only")
    assert stored_entries(tmp_path / "cache") == {}  # read_only writes nothing
    run(tmp_path, "two", prompts)
    run(tmp_path, "three", prompts, cache_mode="refresh")  # sends everything again, overwrites
    assert sent(server) == 6
    run(tmp_path, "four", prompts, cache_mode="read_only")
    assert sent(server) == 6
    for key, data in stored_entries(tmp_path / "cache").items():
        record = json.loads(data)
        record["stored_at"] = time.time() - 7200
        rewrite_entry(tmp_path / "cache", key, json.dumps(record).encode())
    run(tmp_path, "five", prompts, cache_ttl=3600)  # older than the ttl: a miss
    assert sent(server) == 8
    run(tmp_path, "six", prompts)  # no ttl: the refreshed entries
    assert sent(server) == 8


def test_invalid_answers_are_not_cached(conn, server, tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    kwargs = {"output_schema": schema, "max_failed_fraction": 1.0, "output_retries": 0}
    prompts = ["valid", "broken [[fault:invalid_output]]"]
    first = run(tmp_path, "one", prompts, **kwargs)
    assert first["invalid_output"] == 1
    assert len(stored_entries(tmp_path / "cache")) == 1
    server.reset()
    second = run(tmp_path, "two", prompts, **kwargs)
    assert server.stats(timestamps=False)["by_prompt"] == {"broken [[fault:invalid_output]]": 1}
    assert second["cached"] == 1


def test_the_key_leaves_out_the_access_key_and_ids(conn, server, tmp_path, make_conn):
    run(tmp_path, "one", [{"id": "a", "prompt": "same question"}])
    make_conn(CONN, server.url, password="another-key")
    summary = run(tmp_path, "two", [{"id": "b", "prompt": "same question"}])
    assert sent(server) == 1 and summary["cached"] == 1
    for data in stored_entries(tmp_path / "cache").values():
        assert b"another-key" not in data and b"canary" not in data


def test_bad_cache_arguments_are_refused_when_the_dag_is_parsed():
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    for field, value in (("cache_mode", "write"), ("cache_ttl", -1), ("cache_nondeterministic", "yes")):
        with pytest.raises(ValueError, match=field):
            AgentChatBatchOperator(task_id="t", prompts=["x"], output_path="/tmp/o.jsonl", **{field: value})


def test_the_single_request_api_round_trips_a_completion(conn, server, tmp_path):
    """What the completion operator will call: key, lookup before sending, store after a valid answer."""
    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.response_cache import ResponseCache

    hook = AgentChatHook(CONN)
    request = hook.build_request([{"role": "user", "content": "one question"}], temperature=0)
    cache = ResponseCache(f"{tmp_path}/single", host=hook.settings.base_url)
    key = cache.key(request)
    assert key is not None and cache.lookup(key) is None
    completion = hook.send(request)
    cache.store(key, completion, {"text": completion.text, "finish_reason": completion.finish_reason})
    hit = cache.lookup(key)
    assert hit is not None and hit.usage == completion.usage_dict()
    again = hit.completion()
    assert again.text == completion.text and again.meta["cached"] is True
    other = ResponseCache(f"{tmp_path}/single", host="https://another.agent")
    assert other.lookup(other.key(request)) is None  # the host is part of the key


# ------------------------------------------------------------------------------------------ object storage

BUCKET = "agentchat-cache"


@pytest.fixture(scope="module")
def s3_url(moto_url):
    return make_bucket(moto_url, BUCKET)


@pytest.fixture()
def storage_conn(s3_url, make_aws_conn) -> str:
    return make_aws_conn("cache_s3", s3_url, "cache-key", "cache-secret")


def test_the_cache_works_on_s3_with_two_writers_and_a_corrupted_object(conn, server, tmp_path, storage_conn, s3_url):
    import boto3

    cache = f"s3://{BUCKET}/responses"
    prompts = [f"s3 question {i}" for i in range(300)]  # more than one batch of cache writes (256)
    halves = [prompts[:280], prompts[20:]]  # overlapping keys written at the same time
    errors: list[BaseException] = []

    def shard(index: int) -> None:
        try:
            run(tmp_path, f"shard{index}", halves[index], cache_path=cache, storage_conn_id=storage_conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = boto3.client(
        "s3", endpoint_url=s3_url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="responses/")["Contents"]]
    assert len(keys) == 300
    client.put_object(Bucket=BUCKET, Key=keys[0], Body=b'{"format": "agentchat-resp')  # torn
    server.reset()
    summary = run(tmp_path, "all", prompts, cache_path=cache, storage_conn_id=storage_conn)
    assert sent(server) == 1 and summary["cached"] == 299 and summary["succeeded"] == 300
