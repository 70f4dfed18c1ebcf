"""The web page in headless Chromium against the whole stack: streaming text and tool cards, an edge restart
mid-stream with nothing repeated or lost, cancel, input and approval, replay of a finished task, safety with
hostile text, and a phone-width screen. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from sluice import events as ev
from sluice.clock import now_iso
from sluice.ids import new_task_id
from support.browser import browser, page
from support.clients import standin_edge
from support.stack import Stack, stack

__all__ = ["browser", "page", "stack"]  # the fixtures, imported for pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.needs_program("chromium")]

expect.set_options(timeout=30_000)  # a loaded machine runs the whole suite alongside


async def submit(page: Page, stack: Stack, prompt: str, agent: str | None = None) -> str:
    await page.goto(f"{stack.edge_url}/")
    if agent is not None:
        await expect(page.locator(f"#agent option[value='{agent}']")).to_have_count(1)
        await page.select_option("#agent", agent)
    await page.fill("#prompt", prompt)
    await page.click("#run")
    await expect(page.locator("#task-link")).not_to_be_empty()
    task_id = await page.locator("#task-link").inner_text()
    assert page.url.endswith(f"/?task={task_id}")
    return task_id


async def output_of(stack: Stack, task_id: str) -> str:
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        record = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert record["state"] == "completed", record
    output: str = record["output"]
    return output


async def answer_text(page: Page) -> str:
    texts = await page.locator("#timeline .step .text").all_inner_texts()
    return "".join(texts)


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)


async def test_text_and_a_tool_card_stream_in_incrementally(page: Page, stack: Stack) -> None:
    task_id = await submit(page, stack, "What is 17*23? [fault:slow:120]")
    card = page.locator(".tool[data-call-id]")
    await expect(card).to_have_count(1)
    await expect(card.locator(".tool-name")).to_have_text("calculator")
    await expect(card.locator(".tool-args")).to_contain_text('"expression":"17*23"')
    await expect(card).to_have_attribute("data-status", "ok")
    await expect(card.locator(".tool-result")).to_have_text("391")
    lengths: set[int] = set()
    while not await page.locator("#result").is_visible():
        lengths.add(len(await answer_text(page)))
        await page.wait_for_timeout(40)  # sample what the page shows while it streams
    assert len([n for n in lengths if n > 0]) >= 3, f"text did not stream in: {sorted(lengths)}"
    await expect(page.locator("#state")).to_have_text("completed")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator("#usage")).to_contain_text("tokens")
    assert await answer_text(page) == await output_of(stack, task_id)
    await screenshot(page, "tool")


async def test_page_recovers_from_an_edge_restart_with_no_text_repeated_or_lost(page: Page, stack: Stack) -> None:
    task_id = await submit(page, stack, "Tell me how a river finds the sea [fault:slow:80]")
    step = page.locator("#timeline .step .text")
    await expect(step).to_contain_text("Sluice demo model")
    await asyncio.to_thread(stack.kill, "edge")
    try:
        await expect(page.locator("#conn")).to_be_visible()
        await screenshot(page, "reconnecting")
    finally:
        await asyncio.to_thread(stack.start_service, "edge")
    await expect(page.locator("#result")).to_be_visible(timeout=30_000)
    await expect(page.locator("#conn")).to_be_hidden()
    assert await answer_text(page) == await output_of(stack, task_id)
    await screenshot(page, "after-restart")


async def test_cancel_button_cancels_the_task(page: Page, stack: Stack) -> None:
    await submit(page, stack, "Tell me about patience [fault:slow:200]")
    await expect(page.locator("#timeline .step .text")).to_contain_text("Sluice demo model")
    await page.click("#cancel")
    await expect(page.locator("#state")).to_have_text("canceled")
    await expect(page.locator("#result")).to_contain_text("Canceled")
    await expect(page.locator("#cancel")).to_be_hidden()


async def test_answering_a_question_continues_the_task(page: Page, stack: Stack) -> None:
    task_id = await submit(page, stack, "Ask me for my favourite colour")
    await expect(page.locator("#input-text")).to_be_visible()
    await expect(page.locator("#state")).to_have_text("needs input")
    await expect(page.locator("#input-prompt")).to_contain_text("Could you tell me")
    await screenshot(page, "question")
    await page.fill("#input-text", "teal")
    await page.click("#send")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator("#input")).to_be_hidden()
    await expect(page.locator(".note.answer")).to_have_text("› teal")
    assert "teal" in await output_of(stack, task_id)


async def test_approving_a_tool_call_runs_it(page: Page, stack: Stack) -> None:
    task_id = await submit(page, stack, "What is 6*7?", agent="careful-assistant")
    await expect(page.locator("#approve")).to_be_visible()
    await expect(page.locator("#input-call")).to_contain_text("calculator")
    await page.click("#approve")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator(".tool .tool-result")).to_have_text("42")
    assert "42" in await output_of(stack, task_id)


async def test_denying_a_tool_call_skips_it_and_the_task_says_so(page: Page, stack: Stack) -> None:
    task_id = await submit(page, stack, "What is 8*9?", agent="careful-assistant")
    await expect(page.locator("#deny")).to_be_visible()
    await expect(page.locator("#input-call")).to_contain_text("calculator")
    await page.click("#deny")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator("#input")).to_be_hidden()
    await expect(page.locator(".note.answer")).to_have_text("› denied")
    await expect(page.locator(".tool[data-call-id]")).to_have_attribute("data-status", "error")
    output = await output_of(stack, task_id)
    assert "denied by the user" in output and "72" not in output, output
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        log = (await http.get(f"/v1/tasks/{task_id}/events", params={"follow": "false", "format": "ndjson"})).text
    events = [json.loads(line) for line in log.splitlines()]
    [resumed] = [e["data"] for e in events if e["type"] == "task.resumed"]
    [result] = [e["data"] for e in events if e["type"] == "tool.completed"]
    assert resumed["approved"] is False and result["ok"] is False, (resumed, result)


async def test_a_task_url_replays_it_and_hostile_text_stays_text(browser: Browser, stack: Stack) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> What is 1+1?'
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        task_id = (await http.post("/v1/tasks", json={"input": hostile})).json()["id"]
        async with http.stream("GET", f"/v1/tasks/{task_id}/events", params={"format": "ndjson"}) as stream:
            async for _ in stream.aiter_lines():
                pass  # to the end: the task is over
    context = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = await context.new_page()
    await page.goto(f"{stack.edge_url}/?task={task_id}")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator("#question")).to_have_text(hostile)
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("main img, main script").count() == 0
    assert await answer_text(page) == await output_of(stack, task_id)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways on a phone"
    await screenshot(page, "phone")
    await page.goto(f"{stack.edge_url}/?task=not-a-task!")
    await expect(page.locator("#error")).to_have_text("That is not a task id.")
    await context.close()


async def test_page_loads_nothing_from_outside_the_edge(page: Page, stack: Stack) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{stack.edge_url}/")
    assert response is not None
    assert "default-src 'none'" in (response.headers.get("content-security-policy") or "")
    await expect(page.locator("#agent option")).not_to_have_count(1)  # the agent card listed the agents
    assert requested and all(url.startswith(stack.edge_url) for url in requested), requested


def retried_log(task_id: str) -> list[ev.Event]:
    """A step cut off and retried: the late delta of attempt 1 must not show; a duplicate must not either."""
    usage = ev.Usage(input_tokens=1, output_tokens=2)
    datas: list[tuple[type[ev.Event], object]] = [
        (ev.TaskSubmitted, ev.TaskSubmittedData(input="retry me", agent="assistant", history=[], metadata={})),
        (ev.TaskStarted, ev.TaskStartedData(attempt=1, runner="r")),
        (ev.LlmStarted, ev.LlmStartedData(step=1, attempt=1, model="m", agent="assistant")),
        (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=1, text="Hel")),
        (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=1, text="lo wro")),
        (ev.LlmStarted, ev.LlmStartedData(step=1, attempt=2, model="m", agent="assistant")),
        (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=1, text="ng!")),
        (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=2, text="Hello")),
        (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=2, text=" right")),
        (ev.LlmCompleted, ev.LlmCompletedData(step=1, attempt=2, content="Hello right", tool_calls=[], usage=usage,
                                              finish_reason="stop")),
        (ev.TaskCompleted, ev.TaskCompletedData(output="Hello right", usage=usage)),
    ]  # fmt: skip
    log = [cls(task_id=task_id, ts=now_iso(), source="t", data=data) for cls, data in datas]  # type: ignore[call-arg]
    for i, event in enumerate(log):
        event.id = str(10 + 2 * i)
    return log


async def test_page_drops_superseded_attempts_and_duplicate_events(page: Page) -> None:
    async with standin_edge() as edge:
        log = retried_log(new_task_id())
        task = edge.add_task(log, released=5)
        task.cuts = [4]  # break the first connection after 4 events: the browser resumes with Last-Event-ID
        await page.goto(f"{edge.url}/?task={task.id}")
        await expect(page.locator("#timeline .step .text")).to_have_text("Hello wro")
        await task.release()
        await expect(page.locator("#result")).to_contain_text("Completed")
        assert await answer_text(page) == "Hello right"
        resumed = [r["headers"].get("last-event-id") for r in edge.requests if r["path"].endswith("/events")]
        assert resumed[0] is None and log[3].id in resumed[1:], resumed


# ---------------------------------------------------------------- a conversation


async def test_a_follow_up_continues_the_conversation_shown_above_it_and_listed_as_recent(
    page: Page, stack: Stack
) -> None:
    first = await submit(page, stack, "What is 6 * 7?")
    await expect(page.locator("#result")).to_contain_text("Completed")
    await expect(page.locator("#recent-list a").first).to_have_text("What is 6 * 7?")
    await page.fill("#prompt", "And what is 7 * 8?")
    await page.click("#run")
    await expect(page.locator("#task-link")).not_to_have_text(first)
    second = await page.locator("#task-link").inner_text()
    await expect(page.locator("#result")).to_contain_text("Completed")
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        records = [(await http.get(f"/v1/tasks/{t}")).json() for t in (first, second)]
    context = records[0]["context_id"]
    assert records[1]["context_id"] == context
    await expect(page.locator("#turns .turn")).to_have_count(1)
    await expect(page.locator("#turns .turn-question")).to_contain_text("What is 6 * 7?")
    await expect(page.locator("#turns .turn-answer")).to_have_text(records[0]["output"])
    await expect(page.locator(f"#recent-list a[data-context='{context}']")).to_have_count(1)

    await page.click("#new-chat")
    await expect(page.locator("#conversation")).to_be_hidden()
    await page.goto(f"{stack.edge_url}/?context={context}")  # reopening it shows its last task, the first above it
    await expect(page.locator("#task-link")).to_have_text(second)
    await expect(page.locator("#turns .turn")).to_have_count(1)


async def test_markdown_answers_are_built_as_dom_with_nothing_from_outside_the_edge(page: Page, stack: Stack) -> None:
    await page.goto(f"{stack.edge_url}/")
    markdown = (
        "# Title\n**bold** and *it* and `code` <script>window.pwned=1</script>\n\n- one\n- two\n\n"
        "[outside](https://example.com/x) [inside](/docs) ![pic](https://example.com/p.png) [js](javascript:alert(1))\n"
        "```python\nprint('<b>')\n```"
    )
    html = await page.evaluate(
        "(text) => { const d = document.createElement('div'); d.append(SluiceMarkdown.render(text));"
        " return d.innerHTML; }",
        markdown,
    )
    assert "<h3>Title</h3>" in html and "<strong>bold</strong>" in html and "<em>it</em>" in html
    assert "<code>code</code>" in html and "<ul><li>one</li><li>two</li></ul>" in html
    assert "&lt;script&gt;" in html and "<script" not in html and "<img" not in html
    assert '<a href="/docs">inside</a>' in html and "https://example.com/x" in html
    assert 'href="https:' not in html and 'href="javascript:' not in html
    assert "<pre><code data-lang=\"python\">print('&lt;b&gt;')</code></pre>" in html
    assert await page.evaluate("window.pwned") is None
