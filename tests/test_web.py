"""The web chat page (``/``: ``coe/api/web.py`` and ``coe/api/static``) in a real browser.

Debian's ``chromium`` (``make test`` installs it), driven by Playwright, against ``coe serve``
(``live_server``): real experts, real token streaming. Playwright never downloads a browser here.
Each step leaves a screenshot in ``tests/artifacts/web/`` (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import REPO
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from coe.api.app import create_app
from coe.config import ExpertConfig, Settings
from coe.experts.launch import free_port
from coe.service import Service

CHROMIUM = Path("/usr/bin/chromium")
#: headless, and nothing that phones home: this machine's closed network refuses those connections
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts" / "web"
DEFAULT_EXPERTS = ["smollm2", "smollm2-warm", "gemma3-270m"]
SHORT = 24  # max_tokens of ordinary answers
VOTE = 16  # max_tokens of each of the vote's three answers (they share two cores)
LONG = 400  # max_tokens of the answer that gets stopped
ANSWER_TIMEOUT_S = 90.0
KEY = "web-test-key"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (`make test` installs it)"
)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile; screenshots start from an empty folder."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
    print(f"\nweb page screenshots: {ARTIFACTS}")


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab (so its own sessionStorage); fails the test on any uncaught script error."""
    tab = browser.new_page()
    crashes: list[str] = []
    tab.on("pageerror", lambda err: crashes.append(str(err)))
    try:
        yield tab
    finally:
        tab.close()
    assert not crashes, f"script errors on the page: {crashes}"


@pytest.fixture(scope="module")
def keyed_server(
    config_file: Path, live_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second coe, in-process under uvicorn, that requires ``KEY``; its one graph (`single`)
    asks the live server's `single` graph, so it starts no model server of its own."""
    graphs = tmp_path_factory.mktemp("web-graphs")
    shutil.copy(REPO / "graphs" / "single.yaml", graphs / "single.yaml")
    settings = Settings.load(config_file, graphs_dir=graphs, api_keys=[KEY])
    upstream = ExpertConfig(
        name="single", backend="openai", model="single", endpoint=live_server + "/v1", params_b=0.135
    )
    app = create_app(settings, lambda s: Service(s, experts=[upstream], start_redis=False))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="keyed-coe", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the keyed server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# --- helpers ----------------------------------------------------------------------------------------

_shots = iter(range(1, 100))


def shot(page: Page, name: str, whole: bool = False) -> Path:
    """A screenshot, numbered in the order the steps ran. The conversation scrolls inside the page,
    so ``whole`` grows the window to its full height for the picture, then puts it back."""
    path = ARTIFACTS / f"{next(_shots):02d}-{name}.png"
    size = page.viewport_size
    if whole and size:
        hidden = page.locator("#conversation").evaluate("m => m.scrollHeight - m.clientHeight")
        page.set_viewport_size({"width": size["width"], "height": size["height"] + max(0, hidden)})
    page.screenshot(path=path)
    if whole and size:
        page.set_viewport_size(size)
    print(f"screenshot: {path}")
    return path


def open_chat(page: Page, url: str, graph: str, max_tokens: int) -> None:
    page.goto(url + "/")
    expect(page.locator("#graph")).to_be_enabled(timeout=15_000)
    page.select_option("#graph", graph)
    page.fill("#max-tokens", str(max_tokens))


def ask(page: Page, text: str) -> Locator:
    """Send ``text``; returns the answer's turn."""
    before = page.locator(".turn.assistant").count()
    page.fill("#prompt", text)
    page.click("#send")
    answer = page.locator(".turn.assistant").nth(before)
    expect(answer).to_be_attached()
    return answer


def state_of(answer: Locator) -> tuple[str, int]:
    """The answer's state and its text's length, read at one instant."""
    state, length = answer.evaluate("n => [n.dataset.state, n.querySelector('.text').textContent.length]")
    return state, length


def record_growth(page: Page) -> None:
    """Record, in the page, the length of every text the next answer shows, as it is set.

    A MutationObserver sees each text node the page puts into an answer (the page replaces the
    answer's text per streamed piece), so no growth is missed however fast the expert is; polling
    from here could find a short answer already finished.
    """
    page.evaluate("""() => {
        window.coeLengths = [];
        new MutationObserver(records => {
            for (const r of records) {
                if (!r.target.matches || !r.target.matches('.turn.assistant .text')) continue;
                for (const n of r.addedNodes) {
                    if (n.nodeType === Node.TEXT_NODE) window.coeLengths.push(n.data.length);
                }
            }
        }).observe(document.getElementById('conversation'), {childList: true, subtree: true});
    }""")


def growth(page: Page) -> list[int]:
    """The text lengths the answer showed, in order (see ``record_growth``)."""
    lengths: list[int] = page.evaluate("() => window.coeLengths")
    return lengths


def settled(answer: Locator, state: str = "done") -> None:
    expect(answer).to_have_attribute("data-state", state, timeout=ANSWER_TIMEOUT_S * 1000)


def open_trace(answer: Locator) -> Locator:
    trace = answer.locator("details.trace")
    trace.locator("summary").click()
    expect(trace).to_have_attribute("open", "")
    return trace


def experts_in(trace: Locator) -> list[str]:
    return trace.locator(".trace-calls .call .expert").all_text_contents()


# --- the page's files -------------------------------------------------------------------------------


def test_page_and_assets_are_served(live_server: str) -> None:
    page = httpx.get(live_server + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta name="viewport"' in page.text
    for asset, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{live_server}/static/{asset}")
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(kind)
    # offline deployments: nothing is loaded from elsewhere
    assert "http://" not in page.text and "https://" not in page.text
    for path in ("/static/nope.js", "/static/..%2Fweb.py", "/static/index.html/.."):
        assert httpx.get(live_server + path).status_code == 404, path


# --- in the browser ---------------------------------------------------------------------------------


def test_streamed_answer_with_trace_and_history(page: Page, live_server: str) -> None:
    models = {m["id"]: m for m in httpx.get(live_server + "/v1/models").json()["data"]}
    open_chat(page, live_server, "single", SHORT)
    assert set(page.locator("#graph option").all_text_contents()) == set(models)
    expect(page.locator("#graph-description")).to_contain_text(models["single"]["description"])
    shot(page, "page-single-picked")

    record_growth(page)
    answer = ask(page, "Write a short poem about the sea.")
    page.wait_for_function(
        "n => n.dataset.state !== 'waiting'", arg=answer.element_handle(), timeout=ANSWER_TIMEOUT_S * 1000
    )
    shot(page, "answer-streaming")
    settled(answer)
    seen = growth(page)
    growing = sorted(set(seen))
    assert len(growing) >= 2, f"the answer did not grow while streaming: lengths seen {seen}"
    assert seen == sorted(seen), "text only grows"
    text = answer.locator(".text").text_content()
    assert text and text.strip() and len(text) == seen[-1]
    expect(answer.locator(".error")).to_have_count(0)
    shot(page, "answer-done")

    trace = open_trace(answer)
    assert experts_in(trace) == ["smollm2"]
    call = trace.locator(".trace-calls .call").first
    expect(call.locator("pre.answer")).to_have_text(text)  # `single` answers with its expert's text
    expect(call.locator(".meta")).to_contain_text(" tokens · $")
    expect(trace.locator(".trace-route")).to_contain_text("router fixed")
    expect(trace.locator(".trace-route")).to_contain_text("primary")
    expect(trace.locator(".trace-aggregate")).to_contain_text("chosen")
    shot(page, "trace-open", whole=True)

    # multi-turn: the previous question and answer go with the next one
    page.fill("#max-tokens", "8")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        second = ask(page, "Now make it rhyme.")
    body: dict[str, Any] = sent.value.post_data_json
    assert body["stream"] is True and body["max_tokens"] == 8 and body["model"] == "single"
    assert body["messages"] == [
        {"role": "user", "content": "Write a short poem about the sea."},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "Now make it rhyme."},
    ]
    settled(second)
    shot(page, "second-turn")


def test_vote_on_a_phone_shows_three_calls(page: Page, live_server: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_chat(page, live_server, "vote", VOTE)
    answer = ask(page, "What is 2 + 2?")
    settled(answer)
    trace = open_trace(answer)
    assert sorted(experts_in(trace)) == sorted(DEFAULT_EXPERTS)
    expect(trace.locator(".trace-calls pre.answer")).to_have_count(3)
    expect(trace.locator(".trace-aggregate")).to_contain_text("aggregator vote")
    expect(trace.locator("summary")).to_contain_text("3 expert calls")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
    shot(page, "vote-phone")
    shot(page, "vote-phone-trace", whole=True)


def test_stop_a_long_answer(page: Page, live_server: str) -> None:
    open_chat(page, live_server, "single", LONG)
    answer = ask(page, "Tell me a very long story about a dragon who learns to cook.")
    page.wait_for_function(
        "n => n.dataset.state === 'streaming' && n.querySelector('.text').textContent.length >= 40",
        arg=answer.element_handle(),
        timeout=ANSWER_TIMEOUT_S * 1000,
    )
    page.click("#stop")
    settled(answer, "stopped")
    expect(answer.locator(".status")).to_have_text("Stopped.")
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    stopped_at = answer.locator(".text").text_content() or ""
    page.wait_for_timeout(1500)
    assert answer.locator(".text").text_content() == stopped_at, "text arrived after stop"
    assert state_of(answer) == ("stopped", len(stopped_at))
    expect(answer.locator("details.trace")).to_have_count(0)  # the run was cancelled: no trace
    shot(page, "stopped")

    # the conversation goes on, with the partial answer as the assistant's turn
    page.fill("#max-tokens", "8")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        after = ask(page, "Thanks!")
    assert sent.value.post_data_json["messages"][1] == {"role": "assistant", "content": stopped_at}
    settled(after)


def test_an_api_error_is_shown(page: Page, live_server: str) -> None:
    open_chat(page, live_server, "single", SHORT)
    # A graph the server does not serve: the picker only offers served ones, so add one to it.
    page.evaluate("""() => {
        const option = new Option('no-such-graph', 'no-such-graph');
        document.getElementById('graph').append(option);
        option.selected = true;
    }""")
    answer = ask(page, "Hello?")
    settled(answer, "error")
    error = answer.locator(".error")
    expect(error).to_contain_text("no-such-graph")
    expect(error).to_contain_text("model_not_found")
    expect(error).to_contain_text("HTTP 404")
    expect(page.locator(".turn.user").last).to_have_class("turn user dropped")
    shot(page, "error-shown")


def sse_body(*events: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events)


def chunk(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-web",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "single",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }


@pytest.mark.parametrize(
    ("ending", "shown"),
    [
        (
            [{"error": {"message": "smollm2 went away", "type": "upstream_error", "code": "expert_failed"}}],
            ["smollm2 went away", "expert_failed"],
        ),
        ([], ["ended before it was complete"]),
    ],
    ids=["error-event", "cut-without-done"],
)
def test_a_stream_that_fails_midway_is_shown(
    page: Page, live_server: str, ending: list[dict[str, Any]], shown: list[str]
) -> None:
    """The page's side of the contract for failures after a stream began: an ``{"error": ...}``
    event, or a stream that ends without ``[DONE]``. Real servers fail so only when an expert
    dies mid-answer, so this one stream is played to the page from the contract instead."""
    body = sse_body(chunk("Partial "), chunk("answer"), *ending)
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    open_chat(page, live_server, "single", SHORT)
    answer = ask(page, "Hello?")
    settled(answer, "error")
    expect(answer.locator(".text")).to_have_text("Partial answer")
    for text in shown:
        expect(answer.locator(".error")).to_contain_text(text)
    shot(page, f"stream-failed-{'event' if ending else 'cut'}")


def test_asks_for_a_key_when_the_server_needs_one(page: Page, keyed_server: str) -> None:
    assert httpx.get(keyed_server + "/").status_code == 200  # the page itself needs no key
    page.goto(keyed_server + "/")
    form = page.locator("#key-form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("Incorrect API key provided.")
    page.fill("#api-key", "wrong")
    with page.expect_response(lambda r: r.url.endswith("/v1/models")) as listed:
        page.click("#key-form button")
    assert listed.value.status == 401
    expect(form).to_be_visible()  # asked again
    expect(page.locator("#graph")).to_be_disabled()
    shot(page, "key-asked")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    expect(form).to_be_hidden()
    expect(page.locator("#graph")).to_be_enabled()
    assert page.evaluate("sessionStorage.getItem('coe.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0
    page.fill("#max-tokens", "8")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        answer = ask(page, "Name a colour.")
    assert sent.value.headers["authorization"] == f"Bearer {KEY}"
    settled(answer)
    shot(page, "key-accepted-answer")
