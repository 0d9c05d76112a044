"""The page at `/` driven by a real headless Chromium against a real broker process.

Everything goes through the browser: the page loads, gets its guest cookie, opens `/ws`, and
a person types and clicks. Assertions use Playwright's auto-waiting `expect`, never sleeps.
Screenshots land in `test-artifacts/` for a human to look at.
"""

from __future__ import annotations

import re
import secrets

import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from rentahal.testing.process import StubServer
from tests.browser import ARTIFACTS, PHONE, Recorder, open_page
from tests.conftest import Realm

REPLY = "The quick brown fox jumps over the lazy dog and naps in the warm sun"
FINAL_META = re.compile(r"^w1 · \d+\.\d{2} s · \$0\.01\d{2}$")  # worker · time · cost


@pytest_asyncio.fixture
async def slow_ollama(ollama_stub: StubServer) -> StubServer:
    """The Ollama stub answering REPLY one word every 0.2 s."""
    await ollama_stub.reset()
    await ollama_stub.configure(chunk_delay=0.2, reply=REPLY)
    return ollama_stub


async def chat_with_streaming(page: Page, prompt: str) -> None:
    """Send `prompt` with the Send button and check the answer streams in, then completes."""
    await expect(page.locator("#user-info")).to_have_text(re.compile(r"^user_\w+ \(\w+\)$"))
    # The picker lists the worker's model (and the default "any" entry stays selected).
    await expect(page.locator("#model-select option")).to_contain_text(
        ["Any chat worker", re.compile(r"^llama3(:latest)? — w1$")]
    )
    await expect(page.locator("#model-select")).to_have_value("")

    await page.locator("#prompt-input").fill(prompt)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#prompt-input")).to_have_value("")

    card = page.locator("#results li.result").first
    answer = card.locator(".answer")
    meta = card.locator(".meta")
    await expect(card.locator(".prompt")).to_have_text(prompt)

    # A partial answer is on screen before the whole one: the stream grows the text.
    await expect(answer).to_contain_text("The quick")
    partial = await answer.text_content() or ""
    assert partial != REPLY and REPLY.startswith(partial), partial
    assert not FINAL_META.match(await meta.text_content() or "")

    await expect(answer).to_have_text(REPLY)
    await expect(meta).to_have_text(FINAL_META)


# --- 1 + 6: chatting through the page ------------------------------------------------------


async def test_chat_streams_the_answer_and_ctrl_enter_sends(
    realm: Realm, slow_ollama: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await realm.add_worker("w1", slow_ollama)

    await chat_with_streaming(page, "Tell me about foxes")

    # Ctrl+Enter in the prompt sends too.
    await page.locator("#prompt-input").fill("And about dogs?")
    await page.locator("#prompt-input").press("Control+Enter")
    await expect(page.locator("#results li.result")).to_have_count(2)
    newest = page.locator("#results li.result").first
    await expect(newest.locator(".prompt")).to_have_text("And about dogs?")
    await expect(page.locator("#prompt-input")).to_have_value("")
    await expect(newest.locator(".answer")).to_have_text(REPLY)
    await expect(newest.locator(".meta")).to_have_text(FINAL_META)
    await expect(page.locator("#history li")).to_have_count(2)

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "page-desktop.png", full_page=True)


async def test_page_talks_only_to_its_own_broker_without_errors(
    realm: Realm, slow_ollama: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, recorder = desktop
    await realm.add_worker("w1", slow_ollama)

    await chat_with_streaming(page, "Tell me about foxes")

    origin = realm.broker.url
    ws_origin = f"ws://127.0.0.1:{realm.broker.port}"
    assert recorder.requests, "no requests were recorded"
    assert f"{origin}/" in recorder.requests
    assert f"{ws_origin}/ws" in recorder.requests
    foreign = [
        url
        for url in recorder.requests
        if not (url.startswith(f"{origin}/") or url.startswith(f"{ws_origin}/"))
    ]
    assert foreign == []
    assert recorder.console_errors == []
    assert recorder.page_errors == []


async def test_account_totals_update_when_a_query_finishes(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    """The "You" card's query count and cost follow the user's queries without a reload."""
    page, _ = desktop
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub)
    costs = page.locator("#user-costs")
    await expect(costs).to_have_text(re.compile(r"^Queries: 0 · "))
    await expect(page.locator("#model-select option", has_text="— w1")).to_have_count(1)

    await page.locator("#prompt-input").fill("count me")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#results li.result .answer")).to_have_text("echo: count me")

    # The broker has recorded the query (a freshly opened tab shows it)...
    reloaded = await page.context.new_page()
    await reloaded.goto(f"{realm.broker.url}/")
    await expect(reloaded.locator("#user-costs")).to_have_text(
        re.compile(r"^Queries: 1 · .* Total cost: \$0\.01\d{2}$")
    )
    # ...so the tab that asked should show it too, without a reload.
    await expect(costs).to_have_text(re.compile(r"^Queries: 1 · .* Total cost: \$0\.01\d{2}$"))


# --- 2: nickname ---------------------------------------------------------------------------


async def test_setting_a_nickname_and_a_taken_one(
    realm: Realm, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await expect(page.locator("#user-info")).to_have_text(re.compile(r"^user_\w+ \(\w+\)$"))

    mine = f"alice_{secrets.token_hex(3)}"
    await page.get_by_label("Nickname").fill(mine)
    await page.get_by_role("button", name="Set nickname").click()
    await expect(page.locator("#user-info")).to_have_text(re.compile(rf"^{mine} \(\w+\)$"))
    await expect(page.locator("#nickname-input")).to_have_attribute("placeholder", mine)
    await expect(page.locator("#results .notice.error")).to_have_count(0)

    # Somebody else holds "bob_…"; the page must say so and keep the current name.
    taken = f"bob_{secrets.token_hex(3)}"
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as other:
        await other.expect("user_info")
        reply = await other.request({"type": "set_nickname", "nickname": taken})
        assert reply["type"] == "user_info", reply

    await page.get_by_label("Nickname").fill(taken)
    await page.get_by_role("button", name="Set nickname").click()
    notice = page.locator("#results li.notice.error")
    await expect(notice).to_have_count(1)
    await expect(notice).to_have_text(re.compile(r"already taken", re.IGNORECASE))
    await expect(page.locator("#user-info")).to_have_text(re.compile(rf"^{mine} \(\w+\)$"))


# --- 3: user text is text ------------------------------------------------------------------

XSS_PROMPT = '<img src=x onerror="window.__pwned=1"><b>bold</b>'


async def test_user_text_is_rendered_as_text(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, recorder = desktop
    await ollama_stub.reset()  # echoes the prompt: "echo: <prompt>"
    await realm.add_worker("w1", ollama_stub)
    await expect(page.locator("#model-select option", has_text="— w1")).to_have_count(1)

    await page.locator("#prompt-input").fill(XSS_PROMPT)
    await page.get_by_role("button", name="Send").click()

    card = page.locator("#results li.result").first
    await expect(card.locator(".answer")).to_have_text(f"echo: {XSS_PROMPT}")
    await expect(card.locator(".prompt")).to_have_text(XSS_PROMPT)
    assert "<b>bold</b>" in (await card.text_content() or "")
    # The history list, refreshed after the result, shows it as text too.
    await expect(page.locator("#history li .prompt").first).to_have_text(XSS_PROMPT)

    assert await page.locator("#results b, #results img").count() == 0
    assert await page.locator("#history b, #history img").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert not [url for url in recorder.requests if url.endswith("/x")]


# --- 4: broker errors ----------------------------------------------------------------------


async def test_no_worker_error_is_shown(realm: Realm, desktop: tuple[Page, Recorder]) -> None:
    page, _ = desktop
    # Only "Any chat worker" and the $CHAT realm: no worker's model to pick.
    await expect(page.locator("#model-select option")).to_have_text(
        ["Any chat worker", "$CHAT (realm)"]
    )

    await page.locator("#prompt-input").fill("Is anybody out there?")
    await page.get_by_role("button", name="Send").click()

    notice = page.locator("#results li.notice.error")
    await expect(notice).to_have_count(1)
    await expect(notice).to_be_visible()
    await expect(notice).to_have_text(re.compile(r"^Error: .*no (live )?worker", re.IGNORECASE))
    await expect(page.locator("#results li.result")).to_have_count(0)


# --- 5: signing in with an API key ---------------------------------------------------------


async def test_sign_in_with_the_sysop_api_key(realm: Realm, desktop: tuple[Page, Recorder]) -> None:
    page, _ = desktop
    await expect(page.locator("#user-info")).to_have_text(re.compile(r"^user_\w+ \(\w+\)$"))

    await page.get_by_text("Sign in with an API key").click()
    key_input = page.get_by_label("API key")
    await expect(key_input).to_be_visible()

    # A wrong key is refused with a notice, and the page stays the guest's.
    await key_input.fill("not-a-real-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#results li.notice.error")).to_have_text(re.compile(r"not accepted"))
    await expect(page.locator("#user-info")).to_have_text(re.compile(r"^user_\w+ \(\w+\)$"))

    await key_input.fill(realm.sysop_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#user-info")).to_have_text("hal (sysop)")
    await expect(page.locator("#connection")).to_have_text("Connected")
    await expect(key_input).to_have_value("")

    # The new session is the cookie's: a reload stays signed in.
    await page.reload()
    await expect(page.locator("#user-info")).to_have_text("hal (sysop)")


# --- 7: phone width ------------------------------------------------------------------------


async def assert_fits_phone(page: Page) -> None:
    width = PHONE["width"]
    for name in ("#prompt-input", "#submit-button"):
        locator = page.locator(name)
        await expect(locator).to_be_visible()
        box = await locator.bounding_box()
        assert box is not None, name
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box)
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"page is {scroll_width}px wide on a {width}px screen"


async def test_page_fits_a_phone(browser: Browser, realm: Realm, ollama_stub: StubServer) -> None:
    await ollama_stub.reset()
    await ollama_stub.configure(reply=REPLY)
    await realm.add_worker("w1", ollama_stub)
    context, page, _ = await open_page(
        browser, realm, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    try:
        await assert_fits_phone(page)

        await page.locator("#prompt-input").fill("What can you do on a phone?")
        await page.get_by_role("button", name="Send").click()
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_have_text(REPLY)
        await expect(card.locator(".meta")).to_have_text(FINAL_META)
        await assert_fits_phone(page)

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "page-phone.png", full_page=True)
    finally:
        await context.close()


async def test_a_long_unbroken_prompt_does_not_widen_the_phone_page(
    browser: Browser, realm: Realm, ollama_stub: StubServer
) -> None:
    """People paste long URLs; the answer card must wrap them, not scroll sideways."""
    await ollama_stub.reset()  # echoes the prompt
    await realm.add_worker("w1", ollama_stub)
    context, page, _ = await open_page(
        browser, realm, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    try:
        url = "https://example.org/" + "a-very-long-path-segment/" * 8 + "?q=" + "x" * 40
        await page.locator("#prompt-input").fill(url)
        await page.get_by_role("button", name="Send").click()
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_have_text(f"echo: {url}")
        await expect(page.locator("#history li .prompt").first).to_have_text(url)
        await assert_fits_phone(page)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "page-phone-long-url.png", full_page=True)
        await context.close()


# --- accessibility ---------------------------------------------------------------------------


async def test_every_control_has_a_name_and_the_keyboard_reaches_them(
    desktop: tuple[Page, Recorder],
) -> None:
    page, _ = desktop
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button, [role=button]")]
            .filter((node) => node.type !== "file" && node.offsetParent !== null)
            .filter((node) => {
                const labelled = node.labels && [...node.labels].some((l) => l.textContent.trim());
                const named = node.ariaLabel || node.getAttribute("aria-labelledby");
                return !(labelled || named || node.textContent.trim());
            })
            .map((node) => node.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    # Tab order: from the skip link, the first stops are the composer's controls in reading order.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to the prompt")).to_be_focused()
    order = []
    for _ in range(5):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id"))
    assert order == [
        "query-type",
        "model-select",
        "prompt-input",
        "shortcuts-button",
        "submit-button",
    ]
