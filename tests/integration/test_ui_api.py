"""The Connection Test button and the Agent Chat routes, against one real ``airflow api-server`` on 127.0.0.1.

One API server for the module (start-up dominates the time), one dev server that requires the canary key, so
a "good" connection really proves the key travels, and every response body is recorded to check at the end
that the key never reached a client.
"""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.ui import AirflowApiServer, airflow_env, free_port, store_connection

USERS = {
    "admin": ("admin", "admin-pw-1"),
    "op": ("op", "op-pw-1"),
    "viewer": ("viewer", "viewer-pw-1"),  # may not use connections
}
BODIES: list[str] = []
PROXIED_HOST = "agent.canary.invalid"
CHATS_PER_USER = 20  # every response body of the module, checked for the key at the end


class Listener(socketserver.ThreadingTCPServer):
    """A plain-HTTP server on 127.0.0.1 that records every byte it receives and answers 502.

    The API server uses it as its ``http_proxy``: whatever the hook sends over plain http to a host that is not
    loopback passes through it in clear, as it would pass any network observer; https goes elsewhere.
    """

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[bytes] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner) -> None:
                inner.request.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = inner.request.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                self.received.append(data)
                inner.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def seen(self) -> bytes:
        return b"".join(self.received)


class Trickler(socketserver.ThreadingTCPServer):
    """An agent that answers 200 and then sends one blank byte (JSON) or SSE comment a second, never finishing.

    ``open`` counts the requests it is holding; :meth:`stop` ends them all (closing their connections).
    """

    daemon_threads = True

    def __init__(self) -> None:
        self.open = 0
        self.seen = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner) -> None:
                sock = inner.request
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        (
                            line.split(b":")[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        b"0",
                    )
                )
                while len(body) < length:
                    body += sock.recv(65536)
                stream = b'"stream":true' in body.replace(b" ", b"")
                kind = b"text/event-stream" if stream else b"application/json"
                tick = b": tick\n\n" if stream else b" "
                with self.lock:
                    self.open += 1
                    self.seen += 1
                try:
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    while not self.stopped.wait(1.0):
                        sock.sendall(b"%x\r\n%s\r\n" % (len(tick), tick))
                except OSError:
                    pass
                finally:
                    with self.lock:
                        self.open -= 1

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.shutdown()
        self.server_close()


class Server:
    def __init__(self, api: AirflowApiServer, dev: Any, listener: Listener, trickler: Trickler) -> None:
        self.api = api
        self.dev = dev
        self.listener = listener
        self.trickler = trickler
        self.tokens = {name: api.token(name, password) for name, (_, password) in USERS.items()}

    def call(
        self,
        path: str,
        body: Any = None,
        *,
        user: str | None = "admin",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        method: str | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], str]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.api.url + path, data=data, method=method or ("POST" if data else "GET"))
        if data is not None and raw is None:
            request.add_header("Content-Type", "application/json")
        token = token or (self.tokens[user] if user else None)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, head, text = response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            status, head, text = exc.code, dict(exc.headers), exc.read().decode()
        BODIES.append(text)
        return status, head, text

    def json(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, _, text = self.call(path, body, **kwargs)
        return status, json.loads(text)


@pytest.fixture(scope="module")
def server(airflow_db: Path, canary_key: str) -> Iterator[Server]:
    from airflow_agentchat.devserver import DevServer

    listener = Listener()
    trickler = Trickler()
    with DevServer(api_key=canary_key) as dev:
        store_connection("agentchat_db", conn_type="agentchat", host=dev.url, password=canary_key, description="db")
        closed = free_port()
        env = airflow_env(airflow_db, USERS)
        conns = {
            "agentchat_env": {"host": dev.url, "password": canary_key, "extra": {"model": "env-model"}},
            "agentchat_badkey": {"host": dev.url, "password": "sk-wrong-key-000"},
            "agentchat_closed": {
                "host": f"http://127.0.0.1:{closed}",
                "password": canary_key,
                "extra": {"max_retries": 0},
            },
            "agentchat_wrongpath": {"host": f"{dev.url}/not-an-agent", "password": canary_key},
            "agentchat_tls": {"host": dev.url.replace("http://", "https://"), "password": canary_key},
            # https to a name that is not loopback: its key must never cross the plain-http listener
            "agentchat_remote": {"host": PROXIED_HOST, "password": canary_key},
            "agentchat_slow": {
                "host": trickler.url,
                "password": canary_key,
                "extra": {"timeout": 10, "max_retries": 0},
            },
        }
        for conn_id, conn in conns.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "agentchat", **conn})
        env["AIRFLOW_CONN_OTHER_HTTP"] = json.dumps({"conn_type": "http", "host": "example.com", "password": "p1234"})
        env.update(http_proxy=listener.url, no_proxy="127.0.0.1,localhost")
        env.update(
            AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER=str(CHATS_PER_USER), AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT="25"
        )
        with AirflowApiServer(env) as api:
            yield Server(api, dev, listener, trickler)
    listener.shutdown()
    listener.server_close()
    trickler.stop()


# --------------------------------------------------------------------------------------- Connection Test


def test_connection_test_endpoint_reports_success_with_latency_model_tokens(server: Server) -> None:
    status, body = server.json("/api/v2/connections/test", {"connection_id": "agentchat_db", "conn_type": "agentchat"})
    assert status == 200
    assert body["status"] is True, body
    message = body["message"]
    assert message.startswith(f"Connected to {server.dev.url}/api/v1/chat/completions in ")
    assert " ms: model agent answered, 2 prompt + 2 completion tokens." in message


def test_connection_list_test_button_body(server: Server) -> None:
    """Exactly what Airflow 3.3's Test button in the connection list posts for a stored connection.

    The stored port is NULL; the UI sends ``"port": Number(null)``, i.e. 0, and the masked password. Airflow
    alone answers 400 "The host or port to test differs from the stored connection"; the plugin's middleware
    drops the port 0, so the stored key is used and the test really reaches the dev server.
    """
    status, stored = server.json("/api/v2/connections/agentchat_db")
    assert status == 200 and stored["port"] is None and stored["password"] == "***"
    listed = {
        "conn_type": "agentchat",
        "connection_id": "agentchat_db",
        "description": stored["description"],
        "extra": "{}",
        "host": stored["host"],
        "login": "",
        "password": stored["password"],
        "port": 0,
        "schema": "",
    }
    before = server.dev.stats(timestamps=False)["total"]
    status, body = server.json("/api/v2/connections/test", listed)
    assert (status, body.get("status")) == (200, True), body
    assert body["message"].startswith(f"Connected to {server.dev.url}/api/v1/chat/completions in ")
    assert server.dev.stats(timestamps=False)["total"] == before + 1


def test_connection_test_with_another_port_still_needs_credentials(server: Server) -> None:
    """Only port 0 is dropped: a real other port is another destination, and Airflow's rule still applies."""
    body = {"conn_type": "agentchat", "connection_id": "agentchat_db", "host": server.dev.url, "port": 9}
    body["password"] = "***"
    status, answer = server.json("/api/v2/connections/test", body)
    assert status == 400 and "differs from the stored connection" in answer["detail"]


def test_connection_test_of_an_unsaved_connection(server: Server, canary_key: str) -> None:
    """A connection that is not stored, sent whole (key included), as API clients do."""
    form = {"connection_id": "new_conn", "conn_type": "agentchat", "host": server.dev.url, "password": canary_key}
    status, body = server.json("/api/v2/connections/test", form)
    assert (status, body["status"]) == (200, True), body


DOWNGRADES = {
    "plain http": {"schema": "http", "extra": json.dumps({"allow_insecure_http": True})},
    "plain http, masked key": {"schema": "http", "extra": '{"allow_insecure_http": "true"}', "password": "***"},
    "no certificate check": {"extra": json.dumps({"verify": False})},
    "another CA bundle": {"extra": json.dumps({"ca_bundle": "/tmp/attacker-ca.pem"})},
    "another port": {"port": 8443},
    "another connection type": {"conn_type": "http", "schema": "http"},
}


@pytest.mark.parametrize("change", list(DOWNGRADES), ids=list(DOWNGRADES))
def test_connection_test_never_sends_the_stored_key_elsewhere(server: Server, canary_key: str, change: str) -> None:
    """Finding 18.2: a tester keeps the stored host but changes how the stored key would travel.

    Airflow fills in the stored key because host and port match; without the guard the key crossed the
    plain-http listener in clear. Now the test is refused and names the fields, and nothing is sent.
    """
    body = {"connection_id": "agentchat_remote", "conn_type": "agentchat", "host": PROXIED_HOST}
    body.update(DOWNGRADES[change])
    before = len(server.listener.received)
    status, answer = server.json("/api/v2/connections/test", body)
    assert canary_key.encode() not in server.listener.seen()
    assert len(server.listener.received) == before
    assert status == 400, answer
    assert "from the stored connection. The stored key only travels" in answer["detail"], answer
    assert "type the access key into the password field" in answer["detail"]
    if change == "plain http":
        assert "schema, extra.allow_insecure_http differ" in answer["detail"]


def test_a_key_typed_into_the_test_goes_where_the_tester_says(server: Server, canary_key: str) -> None:
    """The tester's own key is theirs to send: the same downgrade with it runs, and the listener sees it.

    Also shows the listener really is on the plain-http path, so the test above can catch a leak.
    """
    body = {"connection_id": "agentchat_remote", "conn_type": "agentchat", "host": PROXIED_HOST}
    body.update(DOWNGRADES["plain http"], password="sk-testers-own-key")
    status, answer = server.json("/api/v2/connections/test", body)
    assert (status, answer["status"]) == (200, False), answer
    assert b"Bearer sk-testers-own-key" in server.listener.seen()
    assert canary_key.encode() not in server.listener.seen()


def test_connection_test_refusal_only_for_callers_who_may_test(server: Server) -> None:
    """The refusal tells nothing to a caller Airflow would not let test connections: they get 401/403.

    Unchanged settings are tested, not refused; so is a connection that is not stored (there is no stored key).
    """
    body = {"connection_id": "agentchat_remote", "conn_type": "agentchat", "host": PROXIED_HOST}
    body.update(DOWNGRADES["plain http"])
    assert server.call("/api/v2/connections/test", body, user=None)[0] == 401
    assert server.call("/api/v2/connections/test", body, user="viewer")[0] == 403
    unchanged = {"connection_id": "agentchat_remote", "conn_type": "agentchat", "host": PROXIED_HOST, "extra": "{}"}
    status, answer = server.json("/api/v2/connections/test", {**unchanged, "password": "***", "port": 0})
    assert (status, answer["status"]) == (200, False), answer  # the stored https settings: tested, not refused
    assert "Cannot resolve the host" in answer["message"]
    not_stored = {**body, "connection_id": "agentchat_not_stored"}  # no stored key to protect: Airflow's to run
    status, answer = server.json("/api/v2/connections/test", not_stored)
    assert (status, answer["status"]) == (200, False), answer


@pytest.mark.parametrize(
    ("conn_id", "expected"),
    [
        ("agentchat_badkey", "Access key rejected by http://127.0.0.1:"),
        ("agentchat_closed", "(connection refused): is the endpoint up and the port right?"),
        ("agentchat_wrongpath", "answered 404 (HTTP 404"),
        ("agentchat_tls", "TLS failed for https://127.0.0.1:"),
    ],
)
def test_connection_test_endpoint_names_the_reason(server: Server, conn_id: str, expected: str) -> None:
    status, body = server.json("/api/v2/connections/test", {"connection_id": conn_id, "conn_type": "agentchat"})
    assert status == 200
    assert body["status"] is False
    assert expected in body["message"], body["message"]


def test_connection_test_rate_limited(server: Server) -> None:
    server.dev.add_faults({"kind": "429", "times": 1})
    status, body = server.json("/api/v2/connections/test", {"connection_id": "agentchat_env", "conn_type": "agentchat"})
    assert (status, body["status"]) == (200, False)
    assert "Rate limited by" in body["message"] and "rate_limit_exceeded" in body["message"]


def test_connection_test_cli(server: Server) -> None:
    """``airflow connections test ID`` runs the same hook method (it prints the message only on failure)."""
    env = dict(server.api.env)
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", "agentchat_badkey"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    BODIES.append(output)
    assert "Connection failed!" in output, output[-2000:]
    assert "Access key rejected by http://127.0.0.1:" in output


# --------------------------------------------------------------------------------------- route security

ROUTES = [
    ("GET", "/agentchat/", None),
    ("GET", "/agentchat/assets/app.js", None),
    ("GET", "/agentchat/api/connections", None),
    ("GET", "/agentchat/api/schema", None),
    ("POST", "/agentchat/api/validate", {"request": {"messages": [{"role": "user", "content": "hi"}]}}),
    (
        "POST",
        "/agentchat/api/connections/agentchat_db/chat",
        {"request": {"messages": [{"role": "user", "content": "hi"}]}},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_routes_require_a_signed_in_user_with_connection_rights(
    server: Server, method: str, path: str, body: Any
) -> None:
    before = server.dev.stats(timestamps=False)["total"]
    status, _, _ = server.call(path, body, user=None, method=method)
    assert status == 401
    status, _, _ = server.call(path, body, token="not-a-jwt", method=method)
    assert status in (401, 403)
    status, _, text = server.call(path, body, user="viewer", method=method)
    assert status == 403, text
    assert server.dev.stats(timestamps=False)["total"] == before  # nothing was sent for them
    for user in ("admin", "op"):
        status, _, text = server.call(path, body, user=user, method=method)
        assert status == 200, (user, text)


def test_state_changing_routes_refuse_forgeable_bodies(server: Server) -> None:
    path = "/agentchat/api/connections/agentchat_db/chat"
    form = b"request=%7B%7D"
    status, _, _ = server.call(path, raw=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, _, _ = server.call(path, raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415
    body = {"request": {"messages": [{"role": "user", "content": "hi"}]}}
    status, _, _ = server.call(path, body, headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _, _ = server.call(path, body, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    same_origin = {"Origin": server.api.url, "Sec-Fetch-Site": "same-origin"}
    status, _, _ = server.call(path, body, headers=same_origin)
    assert status == 200


def test_page_headers(server: Server) -> None:
    status, headers, text = server.call("/agentchat/")
    assert status == 200 and "Agent Chat" in text
    headers = {k.lower(): v for k, v in headers.items()}
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_plugin_registers_nav_entry(server: Server) -> None:
    status, body = server.json("/api/v2/plugins")
    assert status == 200
    (plugin,) = [p for p in body["plugins"] if p["name"] == "agentchat"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/agentchat"
    (view,) = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"]) == ("Agent Chat", "/agentchat/", "nav")


# --------------------------------------------------------------------------------------- page API


def test_connections_list_db_and_env_without_secrets(server: Server, canary_key: str) -> None:
    status, body = server.json("/agentchat/api/connections")
    assert status == 200
    conns = {c["conn_id"]: c for c in body["connections"]}
    assert "other_http" not in conns  # only agentchat connections
    assert conns["agentchat_db"]["source"] == "database"
    assert conns["agentchat_env"] == {
        "conn_id": "agentchat_env",
        "source": "environment",
        "endpoint": server.dev.url,
        "description": "",
        "model": "env-model",
        "has_key": True,
    }
    assert set(conns["agentchat_db"]) == set(conns["agentchat_env"])  # no password, no extra


def test_schema_is_the_request_models(server: Server) -> None:
    from airflow_agentchat.models import ChatCompletionRequest

    status, body = server.json("/agentchat/api/schema")
    assert status == 200
    assert body["schema"] == json.loads(json.dumps(ChatCompletionRequest.model_json_schema()))
    assert set(body["common"]) <= set(body["schema"]["properties"])


def test_chat_answers_with_usage_latency_and_snippet(server: Server) -> None:
    request = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello <b>agent</b>"}],
        "temperature": 0.2,
        "include_guardrails_info": True,
    }
    status, body = server.json("/agentchat/api/connections/agentchat_env/chat", {"request": request})
    assert status == 200, body
    assert body["ok"] is True
    assert body["text"] == "Echo: Hello <b>agent</b>"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert body["meta"]["latency_ms"] > 0 and body["meta"]["attempts"] == 1
    assert body["model"] == "env-model"  # the connection's default model was sent
    assert body["guardrails"] == {"triggered_guardrails": []}
    assert body["raw"]["choices"][0]["message"]["content"] == body["text"]
    snippet = body["snippet"]
    assert "AgentChatCompletionOperator(" in snippet
    assert "agentchat_conn_id='agentchat_env'" in snippet
    assert "system_prompt='Be brief.'" in snippet and "prompt='Hello <b>agent</b>'" in snippet
    assert "temperature=0.2" in snippet and "include_guardrails_info=True" in snippet
    compile(snippet, "snippet", "exec")


def test_chat_sends_image_parts_and_reports_cache_usage(server: Server) -> None:
    system = {"type": "text", "text": "Rate the photo. " * 40, "cache_control": {"type": "ephemeral", "ttl": "5m"}}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    usages = []
    for text in ("first look", "second look"):
        messages = [{"role": "system", "content": [system]}, {"role": "user", "content": [text, image]}]
        status, body = server.json("/agentchat/api/connections/agentchat_env/chat", {"request": {"messages": messages}})
        assert status == 200, body
        assert body["text"] == f"Echo: {text} [1 image]"
        usages.append(body["usage"])
    assert usages[0]["cache_created_input_tokens"] > 0 == usages[0]["cache_read_input_tokens"]
    assert usages[1]["cache_read_input_tokens"] == usages[0]["cache_created_input_tokens"]
    assert "messages=" in body["snippet"]  # parts go into the snippet's messages as they were sent


def test_chat_streams_ndjson_events(server: Server) -> None:
    request = {
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, headers, text = server.call("/agentchat/api/connections/agentchat_db/chat", {"request": request})
    assert status == 200
    assert headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["type"] == "start" and "stream=True" in events[0]["snippet"]
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == "Echo: one two three"
    result = events[-1]
    assert result["type"] == "result" and result["text"] == "Echo: one two three"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    (opened,) = [e for e in events if e["type"] == "open"]  # before the first delta, shown while streaming
    assert events.index(opened) < min(i for i, e in enumerate(events) if e["type"] == "delta")
    assert opened["attempts"] == 1 and opened["request_id"].startswith("req_")
    assert (result["meta"]["attempts"], result["meta"]["request_id"]) == (1, opened["request_id"])


def test_streamed_answer_reports_retries(server: Server) -> None:
    """A rate limit before the stream starts is retried; the page learns how many attempts it took."""
    server.dev.add_faults({"kind": "429", "times": 1, "retry_after": 0})
    request = {"messages": [{"role": "user", "content": "retry me"}], "stream": True}
    status, _, text = server.call("/agentchat/api/connections/agentchat_db/chat", {"request": request})
    result = json.loads(text.splitlines()[-1])
    assert status == 200 and result["type"] == "result", text[-500:]
    assert result["meta"]["attempts"] == 2 and result["text"] == "Echo: retry me"


def test_the_page_shows_the_request_it_sends(server: Server) -> None:
    """The connection's model extra is in the request the page shows, as in the one the hook sends."""
    request = {"messages": [{"role": "user", "content": "which model?"}]}
    status, body = server.json("/agentchat/api/connections/agentchat_env/chat", {"request": request})
    assert status == 200
    assert body["request"]["model"] == body["model"] == "env-model"  # the dev server answers with the model sent
    assert "model=" not in body["snippet"]  # the snippet leaves the model to the connection, as the form did
    stream = {**request, "stream": True}
    status, _, text = server.call("/agentchat/api/connections/agentchat_env/chat", {"request": stream})
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["request"]["model"] == events[-1]["model"] == "env-model"
    status, body = server.json("/agentchat/api/validate", {"conn_id": "agentchat_env", "request": request})
    assert status == 200 and body["body"]["model"] == "env-model"
    status, body = server.json(
        "/agentchat/api/validate", {"conn_id": "agentchat_env", "request": {**request, "model": "m2"}}
    )
    assert body["body"]["model"] == "m2" and "model='m2'" in body["snippet"]


def test_chat_tool_calls(server: Server) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = {"messages": [{"role": "user", "content": "weather?"}], "tools": tools}
    status, body = server.json("/agentchat/api/connections/agentchat_db/chat", {"request": request})
    assert status == 200 and body["finish_reason"] == "tool_calls"
    assert body["tool_calls"][0]["function"]["name"] == "get_weather"


def test_invalid_input_names_field_and_rule_without_sending(server: Server) -> None:
    before = server.dev.stats(timestamps=False)["total"]
    request = {"messages": [{"role": "robot", "content": "hi"}], "temperature": 5, "top_logprobs": 3}
    status, body = server.json("/agentchat/api/connections/agentchat_db/chat", {"request": request})
    assert status == 422
    errors = {e["field"]: e["rule"] for e in body["errors"]}
    assert "messages[0].role" in errors and "'user'" in errors["messages[0].role"]
    assert errors["temperature"] == "Input should be less than or equal to 2"
    status, body = server.json("/agentchat/api/validate", {"request": {"messages": [], "n": 0}})
    assert status == 422
    assert {e["field"] for e in body["errors"]} == {"messages", "n"}
    assert server.dev.stats(timestamps=False)["total"] == before


def test_upstream_errors_are_reported_without_the_key(server: Server, canary_key: str) -> None:
    body_ = {"request": {"messages": [{"role": "user", "content": "hi"}]}}
    status, body = server.json("/agentchat/api/connections/agentchat_badkey/chat", body_)
    assert status == 502
    assert body["error"]["kind"] == "authentication_error" and body["error"]["status"] == 401
    assert body["error"]["retryable"] is False
    status, body = server.json("/agentchat/api/connections/agentchat_closed/chat", body_)
    assert status == 502 and body["error"]["kind"] == "connection_refused" and body["error"]["retryable"] is True
    status, body = server.json("/agentchat/api/connections/no_such_conn/chat", body_)
    assert status == 404


def test_key_echoed_by_the_agent_is_scrubbed(server: Server, canary_key: str) -> None:
    """Even an answer that contains the key (an agent echoing it) never reaches the browser."""
    request = {"messages": [{"role": "user", "content": f"say {canary_key}"}]}
    status, body = server.json("/agentchat/api/connections/agentchat_db/chat", {"request": request})
    assert status == 200 and body["text"] == "Echo: say ***"


def test_slow_agents_do_not_starve_the_api_server(server: Server) -> None:
    """Finding 18.7: 45 page chats to an agent that trickles; Airflow's own API keeps answering.

    Before, each chat held one of the API server's worker threads until the agent finished, so 40 of them
    left ``/api/v2/dags`` unanswered. Now the chats wait on the event loop: 40 are in flight (two users, 20
    each, the configured bound), the 5 beyond the bound get 429 at once, the API answers while the 40 are still
    open, and each of the 40 ends at the page's deadline (25 s here) with ``deadline_exceeded``.
    """
    path = "/agentchat/api/connections/agentchat_slow/chat"
    message = [{"role": "user", "content": "take your time"}]
    results: list[tuple[str, bool, int, str]] = []

    def chat(user: str, stream: bool) -> None:
        try:
            status, _, text = server.call(
                path, {"request": {"messages": message, "stream": stream}}, user=user, timeout=120
            )
        except OSError as exc:
            status, text = 0, repr(exc)
        results.append((user, stream, status, text))

    jobs = [("admin", False)] * (CHATS_PER_USER + 5) + [("op", True)] * CHATS_PER_USER
    threads = [threading.Thread(target=chat, args=job, daemon=True) for job in jobs]
    try:
        for thread in threads:
            thread.start()
        for _ in range(120):  # bounded: until the agent holds every chat the bound lets through
            if server.trickler.open >= 2 * CHATS_PER_USER:
                break
            threading.Event().wait(0.5)
        assert server.trickler.open >= 2 * CHATS_PER_USER - 5, server.trickler.open
        for api_path in ("/api/v2/dags", "/api/v2/connections"):
            status, _, _ = server.call(api_path, timeout=30)  # the old code left these unanswered
            assert status == 200, api_path
        assert server.trickler.open > 0  # the chats were still in flight while the API answered
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.trickler.stopped.set()  # end whatever is left (the old code would hold it forever)
    assert not any(thread.is_alive() for thread in threads)
    refused = [r for r in results if r[2] == 429]
    assert len(refused) == 5 and {r[0] for r in refused} == {"admin"}, [r[:3] for r in results]
    assert "page_chats_per_user" in refused[0][3] and "20 chats in flight" in refused[0][3]
    answered = [r for r in results if r[2] != 429]
    assert len(answered) == 2 * CHATS_PER_USER and server.trickler.seen == 2 * CHATS_PER_USER
    for _user, stream, status, text in answered:
        if stream:
            last = json.loads(text.splitlines()[-1])
            assert status == 200 and last["type"] == "error", text[-300:]
            error = last["error"]
        else:
            assert status == 504, text[-300:]
            error = json.loads(text)["error"]
        assert error["kind"] == "deadline_exceeded" and "page_chat_timeout" in error["message"]


def test_key_never_in_any_response(server: Server, canary_key: str) -> None:
    """Runs last in the module: the key is absent from every body this module received."""
    assert len(BODIES) > 30
    leaks = [body[:200] for body in BODIES if canary_key in body]
    assert not leaks
