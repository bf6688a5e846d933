"""A real browser (Playwright driving Debian's headless chromium) uses the Agent Chat page inside the Airflow UI.

It signs in through Airflow's login form, opens the page from the nav, sends requests to the dev server and
checks what a user sees: the answer (plain and streamed), usage, field errors without sending, the operator
snippet, and that an answer containing markup stays text. Screenshots go to ``test-output/ui/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.ui import AirflowApiServer, airflow_env, store_connection

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "ui"
PASSWORD = "browser-admin-pw"

# CI installs chromium (.ci/run), so there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def stack(airflow_db: Path, canary_key: str) -> Iterator[tuple[AirflowApiServer, Any]]:
    from airflow_agentchat.devserver import DevServer

    with DevServer(api_key=canary_key) as dev:
        store_connection(
            "agentchat_default", conn_type="agentchat", host=dev.url, password=canary_key, description="dev server"
        )
        env = airflow_env(airflow_db, {"admin": ("admin", PASSWORD)})
        with AirflowApiServer(env) as api:
            yield api, dev


@pytest.fixture(scope="module")
def page(stack: tuple[AirflowApiServer, Any]) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    api, _ = stack
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1100})
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.goto(f"{api.url}/")
        page.wait_for_url("**/auth/login**")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/auth/login" not in url)
        yield page
        browser.close()


def _frame(page: Any) -> Any:
    frame = page.frame_locator("iframe")
    frame.locator("body[data-ready=true]").wait_for()
    return frame


def _send(frame: Any, text: str) -> None:
    frame.locator("#messages textarea").first.fill(text)
    frame.locator("#send").click()


def test_agent_chat_page_from_the_nav(page: Any, stack: tuple[AirflowApiServer, Any], canary_key: str) -> None:
    _, dev = stack
    page.get_by_role("link", name="Agent Chat").click()
    page.wait_for_url("**/plugin/agent-chat")
    frame = _frame(page)
    assert frame.locator("#conn-select").input_value() == "agentchat_default"
    assert dev.url in frame.locator("#conn-info").inner_text()

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

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "agent-chat.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert canary_key not in page.frames[-1].content()


def test_streamed_answer_and_operator_snippet(page: Any) -> None:
    frame = _frame(page)
    frame.locator("#system-prompt").fill("Be brief.")
    frame.locator("#f-stream").check()
    _send(frame, "stream me please")
    frame.locator("#status-badge.ok").wait_for()
    assert frame.locator("#answer").inner_text() == "Echo: stream me please"
    stats = frame.locator("#stats").inner_text()
    assert "chunks" in stats and "total tokens" in stats  # include_usage was asked for
    frame.locator("#show-snippet").click()
    snippet = frame.locator("#snippet").inner_text()
    assert "AgentChatCompletionOperator(" in snippet and "stream=True" in snippet
    assert "system_prompt='Be brief.'" in snippet and "prompt='stream me please'" in snippet
    frame.locator("#f-stream").uncheck()
    frame.locator("#system-prompt").fill("")
    frame.locator(".tab[data-tab=answer]").click()


def test_invalid_input_shows_field_and_rule_without_sending(page: Any, stack: tuple[AirflowApiServer, Any]) -> None:
    _, dev = stack
    frame = _frame(page)
    before = dev.stats(timestamps=False)["total"]
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
    assert dev.stats(timestamps=False)["total"] == before  # nothing was sent
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "agent-chat-invalid.png"))
    frame.locator("#f-temperature").fill("")


def test_advanced_form_is_generated_from_the_request_schema(page: Any) -> None:
    from airflow_agentchat.models import ChatCompletionRequest

    frame = _frame(page)
    schema = json.loads(json.dumps(ChatCompletionRequest.model_json_schema()))
    for name, prop in schema["properties"].items():
        if name == "messages":
            continue
        field = frame.locator(f'[data-field="{name}"]')
        assert field.count() == 1, name
        assert field.locator(".desc").inner_text() == prop["description"], name
    assert "0 to 2" in frame.locator('[data-field="temperature"] .rule').inner_text()
    assert (
        "one of: none, minimal, low, medium, high, xhigh"
        in frame.locator('[data-field="reasoning_effort"]').inner_text()
    )
    assert "default 1" in frame.locator('[data-field="n"] .rule').inner_text()
