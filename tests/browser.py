"""Driving the page in Debian's headless Chromium (Playwright): launching it, opening the page
as a fresh profile, and recording what the page did on the network and in its console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    ViewportSize,
    WebSocket,
    expect,
)

from tests.conftest import Realm

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


async def launch(playwright: Playwright, *extra_args: str) -> Browser:
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
    )


@dataclass
class Recorder:
    """What a page did on the network (HTTP requests and WebSockets) and in its console."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        def on_request(request: Request) -> None:
            self.requests.append(request.url)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.console_errors.append(f"{message.text} @ {message.location}")

        def on_page_error(error: Exception) -> None:
            self.page_errors.append(str(error))

        def on_websocket(websocket: WebSocket) -> None:
            self.requests.append(websocket.url)

        page.on("request", on_request)
        page.on("websocket", on_websocket)
        page.on("console", on_console)
        page.on("pageerror", on_page_error)


async def open_page(
    browser: Browser, realm: Realm, viewport: ViewportSize | None = None, **options: Any
) -> tuple[BrowserContext, Page, Recorder]:
    """A fresh browser profile (no cookies) showing the page, connected to the bus."""
    context = await browser.new_context(viewport=viewport or DESKTOP, **options)
    context.set_default_timeout(15_000)
    page = await context.new_page()
    recorder = Recorder()
    recorder.attach(page)
    await page.goto(f"{realm.broker.url}/")
    await expect(page.locator("#connection")).to_have_text("Connected")
    return context, page, recorder


async def sign_in(page: Page, api_key: str) -> None:
    """Sign the page in with an API key, as a person would, and wait for the new identity."""
    await page.get_by_text("Sign in with an API key").click()
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_label("API key")).to_have_value("")
    await expect(page.locator("#connection")).to_have_text("Connected")


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
