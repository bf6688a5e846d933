"""Stream reading against a real local HTTP server that writes exact bytes in exact network pieces.

Each test registers a byte script (a list of pieces); the server sends every piece as its own HTTP chunk with
a flush and a short pause in between, so the client sees the splits the test chose (a CRLF or a UTF-8
character cut in two). Correctness never depends on the splits actually landing, only the coverage does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_agentchat.exceptions import StreamError, TruncatedStreamError
from airflow_agentchat.models import ChatCompletionChunk
from airflow_agentchat.streaming import ChunkFolder, aiter_chunks, fold_chunks, iter_chunks

SECRET = "sk-canary-7f3a9c21"
_SCRIPTS: dict[str, tuple[list[bytes], bool]] = {}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                return
            head += data
        path = head.split(b" ", 2)[1].decode()
        pieces, drop = _SCRIPTS[path]
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for piece in pieces:
            time.sleep(0.003)
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        if not drop:  # a dropped connection closes without the terminating zero-length chunk
            sock.sendall(b"0\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


Outcome = tuple[list[ChatCompletionChunk], BaseException | None]


def _read_sync(url: str) -> Outcome:
    got: list[ChatCompletionChunk] = []
    try:
        with httpx.Client(timeout=5) as client, client.stream("GET", url) as response:
            for chunk in iter_chunks(response, secret=SECRET):
                got.append(chunk)
    except StreamError as exc:
        return got, exc
    return got, None


def _read_async(url: str) -> Outcome:
    async def run() -> Outcome:
        got: list[ChatCompletionChunk] = []
        try:
            async with httpx.AsyncClient(timeout=5) as client, client.stream("GET", url) as response:
                async for chunk in aiter_chunks(response, secret=SECRET):
                    got.append(chunk)
        except StreamError as exc:
            return got, exc
        return got, None

    return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def stream(request: pytest.FixtureRequest, base_url: str) -> Callable[..., Outcome]:
    """``stream(pieces, drop=False)`` serves the pieces and reads them back as (chunks, error)."""
    reader = _read_sync if request.param == "sync" else _read_async

    def run(pieces: list[bytes], drop: bool = False) -> Outcome:
        path = f"/{uuid.uuid4().hex}"
        _SCRIPTS[path] = (pieces, drop)
        return reader(base_url + path)

    return run


def chunk(content: str | None = None, finish: str | None = None, index: int = 0, **extra: Any) -> bytes:
    """One chunk's JSON, UTF-8 encoded as a server sends it (non-ASCII characters not escaped)."""
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def event(data: bytes, eol: bytes = b"\n") -> bytes:
    return b"data: " + data + eol + eol


HELLO = [event(chunk("Hel")), event(chunk("lo")), event(chunk(finish="stop")), b"data: [DONE]\n\n"]


def text_of(chunks: list[ChatCompletionChunk]) -> str | None:
    return fold_chunks(chunks).text


# ------------------------------------------------------------------------------------------------ framing


def test_lf(stream):
    chunks, error = stream(HELLO)
    assert error is None
    assert text_of(chunks) == "Hello"
    assert len(chunks) == 3


def test_crlf(stream):
    chunks, error = stream([b"".join(HELLO).replace(b"\n", b"\r\n")])
    assert error is None and text_of(chunks) == "Hello"


def test_crlf_split_across_pieces(stream):
    pieces = [b"data: " + chunk("a") + b"\r", b"\n\r", b"\ndata: " + chunk("b", "stop") + b"\r\n", b"\r\n"]
    chunks, error = stream([*pieces, b"data: [DONE]\r", b"\n\r", b"\n"])
    assert error is None
    assert [c.text for c in chunks] == ["a", "b"]  # CR then LF is one line break, not two (no empty event)


def test_cr_only(stream):
    chunks, error = stream([b"".join(HELLO).replace(b"\n", b"\r")])
    assert error is None and text_of(chunks) == "Hello"


def test_cr_only_split_before_blank_line(stream):
    chunks, error = stream([b"data: " + chunk("x", "stop") + b"\r", b"\r", b"data: [DONE]\r\r"])
    assert error is None and text_of(chunks) == "x"


def test_comments_ignored(stream):
    pieces = [
        b": keep-alive\n\n",
        b":\n",
        b"data: " + chunk("a") + b"\n: a comment inside an event\n\n",
        b": OPENROUTER PROCESSING\n\n",
        event(chunk("b", "stop")),
        b"data: [DONE]\n\n",
    ]
    chunks, error = stream(pieces)
    assert error is None and text_of(chunks) == "ab"


def test_field_value_space_handling(stream):
    # "data:" with no space and with one space are the same value; a second space belongs to the value.
    chunks, error = stream([b"data:" + chunk("a") + b"\n\n", event(chunk("b", "stop")), b"data:[DONE]\n\n"])
    assert error is None and text_of(chunks) == "ab"
    chunks, error = stream([event(chunk("a", "stop")), b"data:  [DONE]\n\n"])
    assert isinstance(error, StreamError) and not isinstance(error, TruncatedStreamError)
    assert "' [DONE]'" in str(error)


def test_multiline_data_joined_with_newline(stream):
    lines = (
        b'data: {"id": "c",\n'
        b'data:  "choices": [{"index": 0,\n'
        b'data:"delta": {"content": "joined"}, "finish_reason": "stop"}]}\n\n'
    )
    chunks, error = stream([lines, b"data: [DONE]\n\n"])
    assert error is None and text_of(chunks) == "joined"
    # The separator is visible in a non-JSON error event: two lines, two words.
    chunks, error = stream([b"event: error\ndata: upstream\ndata: failed\n\n"])
    assert isinstance(error, StreamError)
    assert "upstream failed" in str(error)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_utf8_character_split_across_pieces(stream, cut):
    raw = event(chunk("café 🙂", "stop"))
    emoji_at = raw.index("🙂".encode())
    e_at = raw.index("é".encode())
    pieces = [raw[: e_at + 1], raw[e_at + 1 : emoji_at + cut], raw[emoji_at + cut :], b"data: [DONE]\n\n"]
    chunks, error = stream(pieces)
    assert error is None and text_of(chunks) == "café 🙂"


def test_unicode_line_separators_inside_json_are_not_line_breaks(stream):
    text = "a\u2028b\u2029c\u0085d\x0be\x0cf"
    chunks, error = stream([event(chunk(text, "stop")), b"data: [DONE]\n\n"])
    assert error is None and text_of(chunks) == text


def test_leading_bom_is_dropped(stream):
    chunks, error = stream([b"\xef\xbb", b"\xbf" + event(chunk("x", "stop")), b"data: [DONE]\n\n"])
    assert error is None and text_of(chunks) == "x"


def test_events_without_data_are_skipped(stream):
    pieces = [
        b"retry: 1000\n\n",
        b"event: ping\ndata:\n\n",
        b"event: ping\n\n",
        b"id: 7\n\n",
        b"data: \n\n",
        event(chunk("ok", "stop")),
        b"data: [DONE]\n\n",
    ]
    chunks, error = stream(pieces)
    assert error is None and text_of(chunks) == "ok"
    assert len(chunks) == 1


def test_done_stops_reading(stream):
    chunks, error = stream([event(chunk("a", "stop")), b"data: [DONE]\n\n", b"data: {not json\n\n"], drop=True)
    assert error is None and text_of(chunks) == "a"


def test_done_without_finish_is_complete(stream):
    # [DONE] is the server's own end marker; a missing finish_reason is lenient (docs/design.md, "Wire rules").
    chunks, error = stream([event(chunk("a")), b"data: [DONE]\n\n"])
    assert error is None and text_of(chunks) == "a"


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {"error": {"message": "Model overloaded", "type": "server_error", "code": "overloaded"}},
            "Model overloaded",
            "overloaded",
        ),
        ({"error": "Model overloaded", "code": "overloaded"}, "Model overloaded", "overloaded"),
        (
            {"id": "too_many_requests", "message": "Model overloaded", "request_id": "r-1"},
            "Model overloaded",
            "too_many_requests",
        ),
        ({"detail": "Model overloaded"}, "Model overloaded", None),
    ],
)
def test_error_event_mid_stream(stream, body, message, code):
    error_event = event(json.dumps(body).encode())
    chunks, error = stream([event(chunk("partial")), error_event, event(chunk("x", "stop")), b"data: [DONE]\n\n"])
    assert [c.text for c in chunks] == ["partial"]  # what came before the error was delivered
    assert type(error) is StreamError
    assert message in str(error)
    if code:
        assert f"code={code}" in str(error)


def test_error_event_with_event_type(stream):
    body = json.dumps({"message": "quota exhausted", "code": "insufficient_quota"}).encode()
    _, error = stream([b"event: error\ndata: " + body + b"\n\n"])
    assert type(error) is StreamError
    assert "quota exhausted" in str(error) and "code=insufficient_quota" in str(error)


def test_chunk_with_extra_keys_is_not_an_error(stream):
    chunks, error = stream([event(chunk("a", "stop", provider="x", message_id="m")), b"data: [DONE]\n\n"])
    assert error is None and text_of(chunks) == "a"


@pytest.mark.parametrize("data", [b"{not json", b'{"choices": "nope"}', b"[1, 2]"])
def test_invalid_data_raises_stream_error(stream, data):
    chunks, error = stream([event(chunk("a")), event(data), b"data: [DONE]\n\n"])
    assert len(chunks) == 1
    assert type(error) is StreamError


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "bad", [event(DEEP), event(b'{"error": ' + DEEP + b"}"), b"event: error\ndata: " + DEEP + b"\n\n"]
)
def test_an_event_nested_100000_deep_is_a_stream_error(stream, bad):
    chunks, error = stream([event(chunk("a")), bad, b"data: [DONE]\n\n"])
    assert [c.text for c in chunks] == ["a"]
    assert type(error) is StreamError


def test_secret_is_redacted(stream):
    body = {"error": {"message": f"invalid key {SECRET} for agent", "code": "bad_key"}}
    _, error = stream([event(json.dumps(body).encode())])
    assert isinstance(error, StreamError)
    assert SECRET not in str(error) and "invalid key *** for agent" in str(error)
    _, error = stream([event(f"oops {SECRET}".encode())])
    assert isinstance(error, StreamError) and SECRET not in str(error)
    # A key straddling the point where the data snippet is cut must not leak in part either.
    _, error = stream([event(("x" * 110 + SECRET).encode())])
    assert isinstance(error, StreamError) and SECRET[:8] not in str(error)


def test_missing_done_without_finish_is_truncated(stream):
    chunks, error = stream([event(chunk("Hel")), event(chunk("lo"))])
    assert text_of(chunks) == "Hello"
    assert isinstance(error, TruncatedStreamError)


def test_empty_body_is_truncated(stream):
    _, error = stream([b": only a comment\n\n"])
    assert isinstance(error, TruncatedStreamError)


def test_unterminated_last_event_is_discarded(stream):
    # SSE: an event is only dispatched by a blank line; a finish chunk cut before it does not count.
    chunks, error = stream([event(chunk("a")), b"data: " + chunk(finish="stop") + b"\n"])
    assert len(chunks) == 1 and isinstance(error, TruncatedStreamError)


def test_missing_done_after_finish_is_complete(stream):
    chunks, error = stream([event(chunk("a")), event(chunk(finish="stop"))])
    assert error is None and text_of(chunks) == "a"


def test_missing_done_with_one_of_two_choices_unfinished_is_truncated(stream):
    _, error = stream([event(chunk("a", index=0)), event(chunk("b", "stop", index=1))])
    assert isinstance(error, TruncatedStreamError) and "[0]" in str(error)


def test_connection_dropped_mid_body(stream):
    chunks, error = stream([event(chunk("a")), b"data: " + chunk("b")[:10]], drop=True)
    assert [c.text for c in chunks] == ["a"]
    assert type(error) is StreamError
    assert isinstance(error.__cause__, httpx.TransportError)


# ---------------------------------------------------------------------------------------------- folding


def parse(*bodies: dict[str, Any]) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate(body) for body in bodies]


def choice(index: int = 0, finish: str | None = None, logprobs: Any = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}


def test_parallel_tool_calls_fold(stream):
    def tool_chunk(*calls: dict[str, Any], finish: str | None = None) -> bytes:
        return event(
            json.dumps(
                {
                    "id": "c",
                    "choices": [{"index": 0, "delta": {"tool_calls": list(calls)}, "finish_reason": finish}],
                }
            ).encode()
        )

    pieces = [
        event(json.dumps({"id": "c", "choices": [choice(role="assistant", content="")]}).encode()),
        tool_chunk({"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}),
        tool_chunk(
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "time", "arguments": '{"tz'},
            }
        ),
        tool_chunk({"index": 0, "function": {"arguments": '{"city": '}}),
        tool_chunk({"index": 1, "function": {"arguments": '": "UTC"}'}}),
        tool_chunk({"index": 0, "function": {"arguments": '"Paris"}'}}),
        tool_chunk(finish="tool_calls"),
        b"data: [DONE]\n\n",
    ]
    chunks, error = stream(pieces)
    assert error is None
    result = fold_chunks(chunks)
    assert result.text is None
    assert result.finish_reason == "tool_calls"
    calls = result.tool_calls
    assert [(c.id, c.type, c.function.name, c.index) for c in calls] == [
        ("call_a", "function", "weather", None),
        ("call_b", "function", "time", None),
    ]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert json.loads(calls[1].function.arguments) == {"tz": "UTC"}


def test_tool_calls_without_index_fold_by_id():
    chunks = parse(
        {"choices": [choice(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}])]},
        {"choices": [choice(tool_calls=[{"function": {"arguments": ": 1}"}}])]},
        {"choices": [choice(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{}"}}])]},
        {"choices": [choice(finish="tool_calls")]},
    )
    calls = fold_chunks(chunks).tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", "{}"),
    ]


def test_usage_only_chunk():
    chunks = parse(
        {
            "id": "c1",
            "model": "m",
            "created": 5,
            "choices": [choice(role="assistant", content="hi")],
            "usage": None,
        },
        {"id": "c1", "choices": [choice(finish="stop")]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    )
    result = fold_chunks(chunks)
    assert result.object == "chat.completion"
    assert (result.id, result.model, result.created) == ("c1", "m", 5)
    assert result.text == "hi" and result.finish_reason == "stop"
    assert result.usage_dict() == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_usage_only_chunk_over_the_wire(stream):
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
    chunks, error = stream([event(chunk("a", "stop")), event(usage.encode()), b"data: [DONE]\n\n"])
    assert error is None
    assert chunks[-1].choices == []
    assert fold_chunks(chunks).usage_dict()["total_tokens"] == 3


def test_two_choices_interleaved():
    chunks = parse(
        {"choices": [choice(0, role="assistant", content="A"), choice(1, role="assistant", content="B")]},
        {"choices": [choice(1, content="b")]},
        {"choices": [choice(0, content="a")]},
        {"choices": [choice(1, finish="length")]},
    )
    folder = ChunkFolder()
    for item in chunks:
        folder.add(item)
    assert not folder.complete
    folder.add(parse({"choices": [choice(0, finish="stop")]})[0])
    assert folder.complete
    result = folder.result()
    assert result.texts == ["Aa", "Bb"]
    assert [c.finish_reason for c in result.choices] == ["stop", "length"]


def test_complete_needs_a_choice():
    assert not ChunkFolder().complete


def test_logprobs_fold():
    def lp(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}

    chunks = parse(
        {"choices": [choice(content="Hi", logprobs={"content": [lp("Hi")], "refusal": None})]},
        {"choices": [choice(content=" there", logprobs={"content": [lp(" there")]})]},
        {"choices": [choice(finish="stop", logprobs=None)]},
    )
    logprobs = fold_chunks(chunks).choices[0].logprobs
    assert logprobs is not None
    assert [t.token for t in logprobs.content or []] == ["Hi", " there"]
    assert logprobs.refusal is None
    assert fold_chunks(parse({"choices": [choice(content="x", finish="stop")]})).choices[0].logprobs is None


def test_refusal_and_reasoning_fold():
    chunks = parse(
        {"choices": [choice(role="assistant", reasoning_content="Think")]},
        {"choices": [choice(reasoning_content="ing.")]},
        {"choices": [choice(refusal="I can't ")]},
        {"choices": [choice(refusal="help.", finish="stop")]},
    )
    message = fold_chunks(chunks).message
    assert message is not None
    assert message.role == "assistant"
    assert message.reasoning_content == "Thinking."
    assert message.refusal == "I can't help."
    assert message.content is None


def test_agent_blocks_fold():
    chunks = parse(
        {"id": "c", "choices": [choice(content="Paris")], "system_fingerprint": "fp1"},
        {
            "choices": [choice(finish="stop")],
            "retrieval": {"retrieved_data": [{"id": "doc1", "index": "kb"}]},
            "guardrails": {"triggered_guardrails": []},
        },
        {
            "choices": [],
            "functions": {"called_functions": ["lookup"], "function_details": []},
            "citations": [{"url": "https://example.com"}],
            "system_fingerprint": "fp2",
        },
    )
    result = fold_chunks(chunks)
    assert result.retrieval is not None and result.retrieval.retrieved_data == [{"id": "doc1", "index": "kb"}]
    assert result.functions is not None and result.functions.called_functions == ["lookup"]
    assert result.guardrails is not None and result.guardrails.triggered_guardrails == []
    assert result.citations == [{"url": "https://example.com"}]
    assert result.system_fingerprint == "fp1"
    assert result.to_dict()["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
