"""The web page against an edge that wants API keys, in headless Chromium: it asks for a key on the first 401,
keeps it in sessionStorage, and streams through the browser's own EventSource with the task's stream token —
also through an edge restart, where EventSource reconnects by itself with Last-Event-ID and the same token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Page, Request, expect

from sluice.apikeys import add_key
from support.browser import browser, page
from support.stack import Stack, running_stack

__all__ = ["browser", "page"]  # the fixtures, imported for pytest


pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.needs_program("chromium"), pytest.mark.timeout(180)]

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    root: Path = tmp_path_factory.mktemp("web-auth")
    key, _ = add_key(root / "keys", "web")
    edge_env = {
        "SLUICE_AUTH": "keys",
        "SLUICE_API_KEYS_FILE": str(root / "keys"),
        "SLUICE_TOKEN_SECRET": "t" * 48,  # the restarted edge must verify the tokens the first one made
    }
    with running_stack(root, service_env={"edge": edge_env}) as stack:
        yield stack, key


async def test_the_page_asks_for_a_key_and_streams_with_a_token_through_an_edge_restart(
    page: Page, keyed: tuple[Stack, str]
) -> None:
    stack, key = keyed
    prompts: list[str] = []

    async def answer(dialog: object) -> None:
        prompts.append(dialog.message)  # type: ignore[attr-defined]
        await dialog.accept(key)  # type: ignore[attr-defined]

    page.on("dialog", lambda d: asyncio.ensure_future(answer(d)))
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if "/events" in r.url else None)

    await page.goto(f"{stack.edge_url}/")
    await page.fill("#prompt", "Tell me how a river finds the sea [fault:slow:80]")
    await page.click("#run")
    await expect(page.locator("#task-link")).not_to_be_empty()
    task_id = await page.locator("#task-link").inner_text()
    assert len(prompts) == 1 and "API key" in prompts[0]
    assert await page.evaluate("sessionStorage.getItem('sluice.apiKey')") == key

    await expect(page.locator("#timeline .step .text")).to_contain_text("Sluice demo model")
    await asyncio.to_thread(stack.kill, "edge")
    try:
        await expect(page.locator("#conn")).to_be_visible()
    finally:
        await asyncio.to_thread(stack.start_service, "edge")
    await expect(page.locator("#result")).to_be_visible(timeout=60_000)
    await expect(page.locator("#state")).to_have_text("completed")

    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        record = (await http.get(f"/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"})).json()
    texts = await page.locator("#timeline .step .text").all_inner_texts()
    assert "".join(texts) == record["output"]  # nothing repeated, nothing lost

    tokens = {parse_qs(urlsplit(r.url).query).get("access_token", [""])[0] for r in streams}
    assert len(streams) >= 2 and len(tokens) == 1 and "" not in tokens  # every stream request: one token
    resumed = [await r.all_headers() for r in streams[1:]]
    assert any("last-event-id" in h for h in resumed), "EventSource did not resume with Last-Event-ID"
    assert all("authorization" not in h for h in [await r.all_headers() for r in streams])
    assert len(prompts) == 1  # the key was asked for once


async def test_a_refused_or_missing_key_shows_the_edges_answer(page: Page, keyed: tuple[Stack, str]) -> None:
    stack, _ = keyed
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept("sluice_not-a-key")))
    await page.goto(f"{stack.edge_url}/")
    await page.fill("#prompt", "What is 2+2?")
    await page.click("#run")
    await expect(page.locator("#error")).to_contain_text("not (or no longer) valid")
    await expect(page.locator("#task")).to_be_hidden()
