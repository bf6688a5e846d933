"""``make ui`` as a newcomer uses it: a real browser (Playwright driving Debian's headless chromium).

One ``make ui`` for the module (api-server, scheduler, dag-processor, triggerer and the dev server; its start-up
dominates the time). The browser signs in, presses Test on ``agentchat_default`` in the connection list and
reads the toast, triggers ``example_agentchat_basic`` from its page and sees the run succeed, and uses the
Agent Chat page: answers plain and streamed (seen arriving), field errors without sending, a tool round trip,
the operator snippet. Screenshots at 1400 and 800 px go to ``test-artifacts/ui/`` (git-ignored). The last test
sends SIGTERM to ``make ui`` and finds none of its processes left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
PASSWORD = "browser-admin-pw"

# CI installs chromium (.ci/run), so there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)"
)


class MakeUi:
    """``make ui`` in a subprocess, in a fresh home, on free ports; its output collected line by line."""

    def __init__(self, home: Path, dev_key: str) -> None:
        from dev.ui import free_port

        self.home = home
        self.port, self.dev_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dev_url = f"http://127.0.0.1:{self.dev_port}"
        home.mkdir(parents=True, exist_ok=True)
        # Known login and key: the key is the canary, checked absent from every page.
        (home / "agentchat_ui_login.json").write_text(json.dumps({"password": PASSWORD, "dev_key": dev_key}))
        self.lines: list[str] = []
        self.ready = threading.Event()
        args = f"--port {self.port} --devserver-port {self.dev_port} --home {home}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}  # a newcomer's clean shell
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "ui", f"ARGS={args}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # the test signals make alone, as a terminal's SIGTERM would
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl+C"):
                self.ready.set()
        self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 400) -> None:
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError(f"make ui did not come up:\n{self.output[-4000:]}\n{self.log_tails()}")

    def log_tails(self) -> str:
        logs = self.home / "component-logs"
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*.log")))

    def token(self) -> str:
        request = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def dev_requests(self) -> int:
        """Completion requests make ui's dev server has received (its control API)."""
        with urllib.request.urlopen(f"{self.dev_url}/_dev/stats?timestamps=false", timeout=10) as response:
            return json.loads(response.read())["total"]

    def tree(self) -> list[Any]:
        """Every process under ``make`` right now."""
        import psutil

        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, canary_key: str) -> Iterator[MakeUi]:
    ui = MakeUi(tmp_path_factory.mktemp("make-ui") / "home", canary_key)
    try:
        ui.wait_ready()
        yield ui
    finally:
        processes = ui.tree() if ui.proc.poll() is None else []
        ui.stop()
        for process in processes:  # whatever a failed test left behind (the SIGTERM test checks this properly)
            try:
                process.kill()
            except Exception:
                pass


@pytest.fixture(scope="module")
def browser(stack: MakeUi) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
        page = context.new_page()
        page.goto(f"{stack.url}/")
        # The login form, not the navigation: under load the UI's client-side redirect can abort the first
        # navigation to it (net::ERR_ABORTED), which wait_for_url reports as an error; a selector outlives it.
        page.wait_for_selector("input[name=username]")
        assert "/auth/login" in page.url
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/auth/login" not in url)
        yield page
        chromium.close()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ------------------------------------------------------------------------------------------ make ui itself


def test_make_ui_prints_url_login_and_how_to_stop_and_runs_every_component(stack: MakeUi) -> None:
    out = stack.output
    assert f"Airflow UI:   {stack.url}/" in out
    assert f"Login:        admin / {PASSWORD}" in out
    assert f"agentchat_default -> {stack.dev_url}" in out
    assert "Press Ctrl+C to stop" in out and "Not healthy" not in out
    assert "Installed" not in out and "Resolved" not in out  # uv's package list stays hidden
    health = json.loads(urllib.request.urlopen(f"{stack.url}/api/v2/monitor/health", timeout=10).read())
    assert {name: health[name]["status"] for name in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "dag_processor": "healthy",
        "triggerer": "healthy",
    }
    dags = {d["dag_id"] for d in stack.api("/api/v2/dags?limit=100")["dags"]}
    assert {p.stem for p in (ROOT / "dags").glob("example_*.py")} <= dags


def test_connection_list_test_button_succeeds(browser: Any, stack: MakeUi) -> None:
    page = browser
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    page.wait_for_url("**/connections**")
    row = page.get_by_role("row").filter(has_text="agentchat_default")
    row.get_by_role("button", name="Test Connection").click()
    toast = page.get_by_role("status").filter(has_text="Test Connection")
    toast.first.wait_for()
    text = toast.first.inner_text()
    _shot(page, "connection-test-toast")
    assert "Test Connection Successful" in text, text
    assert f"Connected to {stack.dev_url}/api/v1/chat/completions in " in text
    assert "model agent answered" in text


def test_trigger_example_dag_from_the_ui_and_it_succeeds(browser: Any, stack: MakeUi) -> None:
    page = browser
    page.goto(f"{stack.url}/dags/example_agentchat_basic")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    unpause = dialog.get_by_text("Unpause example_agentchat_basic on trigger")
    assert unpause.is_visible()  # checked by default: the run starts at once
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.wait_for(state="hidden")
    deadline = time.monotonic() + 240
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = stack.api("/api/v2/dags/example_agentchat_basic/dagRuns")["dag_runs"]
        if runs and runs[0]["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert [(r["run_type"], r["state"]) for r in runs] == [("manual", "success")], (runs, stack.log_tails())
    run_id = runs[0]["dag_run_id"]
    tis = stack.api(f"/api/v2/dags/example_agentchat_basic/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert {(ti["task_id"], ti["state"]) for ti in tis} == {("ask", "success"), ("use_answer", "success")}
    # The operator deferred (make ui turns deferrable on) and the triggerer got the answer.
    task_logs = stack.home / "logs" / "dag_id=example_agentchat_basic" / f"run_id={run_id}" / "task_id=ask"
    trigger_logs = "".join(p.read_text(errors="replace") for p in task_logs.glob("*.trigger.*"))
    assert "Trigger fired event" in trigger_logs, sorted(p.name for p in task_logs.glob("*"))
    page.goto(f"{stack.url}/dags/example_agentchat_basic/runs/{run_id}")
    page.get_by_text("success").first.wait_for()
    _shot(page, "dag-run-success")


# ------------------------------------------------------------------------------------------ Agent Chat page


def _frame(page: Any) -> Any:
    frame = page.frame_locator("iframe")
    frame.locator("body[data-ready=true]").wait_for()
    return frame


def _send(frame: Any, text: str) -> None:
    frame.locator("#messages textarea.content").last.fill(text)
    frame.locator("#send").click()


def _png_pixels(png: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium's screenshots are) into (width, height, pixels)."""
    pos, chunks, header = 8, [], b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            chunks.append(data)
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    channels = 4 if color == 6 else 3
    raw, stride, rows, prev = zlib.decompress(b"".join(chunks)), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    pixels = [tuple(row[x * channels : x * channels + 3]) for row in rows for x in range(width)]
    return width, height, pixels


def _ink(page: Any, icon: Any) -> tuple[int, int, float]:
    """(ink width, ink height, mean darkness of the ink) of a nav icon on the nav background, from a screenshot."""
    width, _, pixels = _png_pixels(page.screenshot(clip=icon.bounding_box()))
    background = max(set(pixels), key=pixels.count)
    darkness = {i: sum(background) - sum(p) for i, p in enumerate(pixels)}
    dark = [i for i, d in darkness.items() if d > 150]
    if not dark:
        return 0, 0, 0.0
    xs, ys = [i % width for i in dark], [i // width for i in dark]
    return max(xs) - min(xs) + 1, max(ys) - min(ys) + 1, sum(darkness[i] for i in dark) / len(dark)


def test_nav_icon_is_as_large_and_dark_as_airflows_own(browser: Any, stack: MakeUi) -> None:
    page = browser
    page.goto(f"{stack.url}/")
    ours = _ink(page, page.get_by_role("link", name="Agent Chat").locator("img"))
    theirs = _ink(page, page.get_by_role("button", name="Browse").locator("svg").first)
    assert ours[0] >= theirs[0] - 2 and ours[1] >= theirs[1] - 2, (ours, theirs)
    assert ours[2] >= 0.85 * theirs[2], (ours, theirs)


def test_agent_chat_page_from_the_nav(browser: Any, stack: MakeUi, canary_key: str) -> None:
    page = browser
    page.get_by_role("link", name="Agent Chat").click()
    page.wait_for_url("**/plugin/agent-chat")
    frame = _frame(page)
    assert frame.locator("#conn-select").input_value() == "agentchat_default"
    assert stack.dev_url in frame.locator("#conn-info").inner_text()

    hostile = "Hi <script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    _send(frame, hostile)
    frame.locator("#status-badge.ok").wait_for()
    answer = frame.locator("#answer")
    assert answer.inner_text() == f"Echo: {hostile}"
    assert answer.locator("script, img").count() == 0  # rendered as text, not markup
    assert page.frames[-1].evaluate("window.pwned") is None
    stats = frame.locator("#stats").inner_text()
    assert "total tokens" in stats and "latency" in stats
    assert "Usage" in frame.locator("#blocks").inner_text()
    assert canary_key not in page.frames[-1].content()


def test_streamed_answer_arrives_in_pieces_with_attempts_and_request_id(browser: Any) -> None:
    page = browser
    frame = _frame(page)
    frame.locator("#system-prompt").fill("Be brief.")
    frame.locator("#f-stream").check()
    prompt = "stream me please, one word at a time, so that the answer is seen arriving"
    _send(frame, prompt)
    # make ui's dev server waits before every chunk: the page shows a part of the answer while streaming.
    partial = (
        page.frames[-1]
        .wait_for_function(
            "() => { const a = document.querySelector('#answer');"
            " return a.classList.contains('streaming') && a.textContent.length > 0 && a.textContent }"
        )
        .json_value()
    )
    frame.locator("#status-badge.ok").wait_for()
    final = frame.locator("#answer").inner_text()
    assert final == f"Echo: {prompt}"
    assert final.startswith(partial) and len(partial) < len(final)
    stats = frame.locator("#stats").inner_text()
    assert "chunks" in stats and "total tokens" in stats  # include_usage was asked for
    assert re.search(r"attempts\s*1", stats) and re.search(r"request id\s*req_", stats), stats
    frame.locator("#show-snippet").click()
    frame.locator("[data-panel=operator]").wait_for()
    snippet = frame.locator("#snippet").inner_text()
    assert "AgentChatCompletionOperator(" in snippet and "stream=True" in snippet
    assert "system_prompt='Be brief.'" in snippet and f"prompt='{prompt}'" in snippet
    copy, code = frame.locator("#copy-snippet").bounding_box(), frame.locator("#snippet").bounding_box()
    assert copy["y"] + copy["height"] <= code["y"], (copy, code)  # the Copy button covers no code
    frame.locator("#f-stream").uncheck()
    frame.locator("#system-prompt").fill("")
    frame.locator(".tab[data-tab=answer]").click()


def test_an_image_url_on_a_user_message_and_cache_usage(browser: Any) -> None:
    page = browser
    frame = _frame(page)
    frame.locator("#system-prompt").fill("You look at pictures of dented cars. " * 20)
    frame.locator("#cache-prompt").select_option("5m")
    frame.locator("#messages input.image-url").last.fill("https://example.com/dent.png")
    _send(frame, "what is dented")
    frame.locator("#status-badge.ok").wait_for()
    assert frame.locator("#answer").inner_text() == "Echo: what is dented [1 image]"
    stats = frame.locator("#stats").inner_text()
    assert re.search(r"cache written\s*[1-9]", stats), stats  # the first request wrote the marked prompt
    _send(frame, "and now")
    frame.locator("#answer:has-text('and now')").wait_for()
    stats = frame.locator("#stats").inner_text()
    assert re.search(r"cache read\s*[1-9]", stats), stats  # the same prefix again: read from the cache
    request = json.loads(frame.locator("#raw-request").text_content())
    system, user = request["messages"]
    assert system["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert user["content"][-1] == {"type": "image_url", "image_url": {"url": "https://example.com/dent.png"}}
    frame.locator("#messages input.image-url").last.fill("")
    frame.locator("#cache-prompt").select_option("")
    frame.locator("#system-prompt").fill("")


def test_tool_round_trip_on_the_page(browser: Any, stack: MakeUi) -> None:
    page = browser
    frame = _frame(page)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    frame.locator("#f-tools").fill(json.dumps(tools))
    _send(frame, "What is the weather in Paris?")
    frame.locator("#status-badge.ok").wait_for()
    calls = frame.locator("#blocks details", has_text="Tool calls")
    shown = calls.locator("pre").inner_text()
    assert '"arguments": {' in shown and '"city": ' in shown and '\\"' not in shown  # parsed, not an escaped string
    _shot(page, "agent-chat-tool-calls-1400")
    calls.get_by_role("button", name="Reply with tool results").click()
    rows = frame.locator("#messages .message")
    assert rows.count() == 3
    assert rows.nth(1).locator("select.role").input_value() == "assistant"
    sent_calls = json.loads(rows.nth(1).locator("textarea.tool-calls").input_value())
    assert sent_calls[0]["function"]["name"] == "get_weather"
    assert rows.nth(2).locator("select.role").input_value() == "tool"
    assert rows.nth(2).locator("input.tool-id").input_value() == sent_calls[0]["id"]
    rows.nth(2).locator("textarea.content").fill('{"temperature_c": 21}')
    frame.locator("#send").click()
    frame.locator("#status-badge.ok").wait_for()
    assert "21" in frame.locator("#answer").inner_text()
    request = json.loads(frame.locator("#raw-request").inner_text())
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["user", "assistant", "tool"] and request["messages"][1]["tool_calls"] == sent_calls
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        print(f"screenshot: {_shot(page, f'agent-chat-{width}')}")
    page.set_viewport_size({"width": 1400, "height": 1000})
    for index in (2, 1):
        rows.nth(index).get_by_role("button", name="Remove").click()
    frame.locator("#f-tools").fill("")


def test_invalid_input_shows_field_and_rule_without_sending(browser: Any, stack: MakeUi) -> None:
    page = browser
    frame = _frame(page)
    before = stack.dev_requests()
    frame.locator("#f-temperature").fill("5")
    frame.locator("#advanced summary").click()
    frame.locator("#f-logit_bias").fill("{not json")
    _send(frame, "hello")
    error = frame.locator('[data-field="logit_bias"] .error')
    error.wait_for()
    assert "not valid JSON" in error.inner_text()
    frame.locator("#f-logit_bias").fill("")
    frame.locator("#send").click()
    temperature = frame.locator('[data-field="temperature"].invalid .error')
    temperature.wait_for()
    assert temperature.inner_text() == "temperature: Input should be less than or equal to 2"
    assert stack.dev_requests() == before  # nothing was sent
    _shot(page, "agent-chat-invalid")
    frame.locator("#f-temperature").fill("")


def test_advanced_form_is_generated_from_the_request_schema(browser: Any) -> None:
    from airflow_agentchat.models import ChatCompletionRequest

    frame = _frame(browser)
    schema = json.loads(json.dumps(ChatCompletionRequest.model_json_schema()))
    for name, prop in schema["properties"].items():
        if name == "messages":
            continue
        field = frame.locator(f'[data-field="{name}"]')
        assert field.count() == 1, name
        assert field.locator(".desc").inner_text() == prop["description"], name
    assert "0 to 2" in frame.locator('[data-field="temperature"] .rule').inner_text()
    assert "default 1" in frame.locator('[data-field="n"] .rule').inner_text()


# ------------------------------------------------------------------------------------------ stopping (runs last)


def test_sigterm_to_make_ui_stops_every_process_it_started(stack: MakeUi) -> None:
    import psutil

    processes = stack.tree()
    names = " ".join(" ".join(p.cmdline()) for p in processes)
    for part in ("dev.ui", "airflow_agentchat.devserver", "scheduler", "dag-processor", "triggerer", "api_server"):
        assert part in names, names
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(90) is not None
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, [(p.pid, " ".join(p.cmdline())) for p in alive]
    assert "Stopped." in stack.output
    from dev.ui import port_is_free

    assert port_is_free(stack.port) and port_is_free(stack.dev_port)
