"""The sysop panel, driven by a real headless Chromium against a real broker process.

The sysop signs in with an API key, as a person would, and works the panel with clicks and
keys; guests are pages in other browser contexts. Assertions use Playwright's auto-waiting
`expect`, never sleeps. Screenshots of each tab land in `test-artifacts/`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.browser import PHONE, Recorder, open_page, screenshot, sign_in
from tests.conftest import Realm

TABS = (
    "Workers",
    "Pools & realms",
    "Models",
    "Users",
    "Running",
    "Statistics",
    "Broadcast",
    "Console",
)
LONG_REPLY = " ".join(f"word{i}" for i in range(40))  # 40 chunks, 0.5 s apart: 20 s


async def open_sysop(
    browser: Browser, realm: Realm, viewport: ViewportSize | None = None
) -> tuple[BrowserContext, Page, Recorder]:
    context, page, recorder = await open_page(browser, realm, viewport)
    await sign_in(page, realm.sysop_key)
    await expect(page.locator("#user-info")).to_have_text("hal (sysop)")
    await expect(page.locator("#sysop-panel")).to_be_visible()
    return context, page, recorder


@pytest_asyncio.fixture
async def sysop(browser: Browser, realm: Realm) -> AsyncIterator[tuple[Page, Recorder]]:
    context, page, recorder = await open_sysop(browser, realm)
    try:
        yield page, recorder
    finally:
        await context.close()


@pytest_asyncio.fixture
async def guest(browser: Browser, realm: Realm) -> AsyncIterator[Page]:
    """A guest's page in a browser profile of its own."""
    context, page, _ = await open_page(browser, realm)
    try:
        await expect(page.locator("#user-info")).to_have_text(re.compile(r"^user_\w+ \(guest\)$"))
        yield page
    finally:
        await context.close()


async def tab(page: Page, name: str) -> Locator:
    """Open a tab of the panel and return its pane."""
    await page.get_by_role("tab", name=name).click()
    await expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")
    pane = page.get_by_role("tabpanel", name=name)
    await expect(pane).to_be_visible()
    return pane


async def answer_confirm(page: Page, text: str | re.Pattern[str], yes: bool = True) -> None:
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(text)
    await dialog.get_by_role("button", name="Yes" if yes else "Cancel").click()
    await expect(dialog).to_be_hidden()


async def sign_in_again(page: Page, api_key: str) -> None:
    """`sign_in` on a page that has signed in before (its form is open already)."""
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_label("API key")).to_have_value("")


def no_errors(recorder: Recorder) -> None:
    assert recorder.page_errors == []
    assert recorder.console_errors == []


async def nickname_of(page: Page) -> str:
    """A guest page's nickname, from its `#user-info` ("user_ab12cd34 (guest)")."""
    text = await page.locator("#user-info").inner_text()
    return text.split(" (", 1)[0]


async def user_row(page: Page, nickname: str) -> Locator:
    """The sysop's row for a user, once the users table shows it."""
    pane = await tab(page, "Users")
    row = pane.locator("tbody tr").filter(
        has=page.locator(".nickname", has_text=re.compile(f"^{nickname}$"))
    )
    await expect(row).to_have_count(1)
    return row


# --- showing and hiding -----------------------------------------------------------------------


async def test_the_panel_goes_with_the_sysop_and_comes_back(
    realm: Realm, sysop: tuple[Page, Recorder], guest: Page
) -> None:
    """Signing the same page in as a guest hides the panel; signing back in shows it again,
    listening to the bus once (no doubled console lines)."""
    page, recorder = sysop
    created = await guest.evaluate(
        """fetch('/api/v1/keys', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                  body: JSON.stringify({name: 'page'})}).then((r) => r.json())"""
    )
    nickname = await nickname_of(guest)
    await sign_in_again(page, created["key"])
    await expect(page.locator("#user-info")).to_have_text(f"{nickname} (guest)")
    await expect(page.locator("#sysop-panel")).to_be_hidden()

    await sign_in_again(page, realm.sysop_key)
    await expect(page.locator("#user-info")).to_have_text("hal (sysop)")
    await expect(page.locator("#sysop-panel")).to_be_visible()
    pane = await tab(page, "Console")
    lines = pane.locator("ol.console li")

    async def stats_lines() -> tuple[int, int]:
        asked = await lines.filter(has_text="→ get_stats").count()
        return asked, await lines.filter(has_text="← system_stats").count()

    async def settled() -> bool:  # every ask answered; the sign-in's own stats come unasked
        asked, told = await stats_lines()
        return asked >= 1 and told == asked + 1

    async def answered_once() -> bool:
        asked, told = await stats_lines()
        return asked >= 1 and told == asked

    # Cleared only once the sign-in's messages are all in, so none lands after the clear.
    await eventually(settled)
    await pane.get_by_role("button", name="Clear").click()
    await page.get_by_role("tab", name="Users").click()  # opening it asks for fresh numbers
    await tab(page, "Console")
    # A second listener would log each answer twice.
    await eventually(answered_once)
    # What the guest session saw is not kept.
    users = await user_row(page, nickname)
    await expect(users.locator("td.state")).to_have_text("Active")
    no_errors(recorder)


# --- workers ---------------------------------------------------------------------------------


async def test_add_a_worker_see_its_health_and_remove_it(
    realm: Realm, sysop: tuple[Page, Recorder], ollama_stub: StubServer
) -> None:
    page, recorder = sysop
    pane = await tab(page, "Workers")
    await expect(pane.get_by_text("No workers yet")).to_be_visible()

    await pane.get_by_label("Name").fill("w1")
    await pane.get_by_label("Address").fill(ollama_stub.address)
    await pane.get_by_label("Kind").select_option("ollama")
    await pane.get_by_label("Type", exact=True).select_option("chat")
    await pane.get_by_role("button", name="Add worker").click()

    status = pane.locator("form [role=status]")
    await expect(status).to_have_text("Added worker: w1")
    await expect(pane.get_by_label("Name")).to_have_value("")  # the form is cleared
    row = pane.locator("tbody tr[data-worker='w1']")
    await expect(row).to_be_visible()
    await expect(row.locator(".health-number")).to_have_text("100")
    await expect(row).to_have_class(re.compile(r"\bhealth-good\b"))
    await expect(row).to_contain_text("ollama")
    await expect(row).to_contain_text(ollama_stub.address)
    await expect(row).to_contain_text("llama3")  # the models it listed when checked
    await expect(row.locator("td.state")).to_have_text("up")
    await expect(row).to_contain_text("0/4")
    await screenshot(page, "sysop-workers")

    # A refused worker: the broker's reason is shown next to the form.
    await pane.get_by_label("Name").fill("w1")
    await pane.get_by_label("Address").fill(ollama_stub.address)
    await pane.get_by_label("Kind").select_option("ollama")
    await pane.get_by_role("button", name="Add worker").click()
    await expect(status).to_contain_text("already exists")
    await expect(status).to_have_class(re.compile(r"\berror\b"))

    # Removing asks first; "Cancel" keeps it.
    await row.get_by_role("button", name="Remove worker w1").click()
    await answer_confirm(page, "Remove worker w1?", yes=False)
    await expect(row).to_be_visible()
    await row.get_by_role("button", name="Remove worker w1").click()
    await answer_confirm(page, "Remove worker w1?")
    await expect(row).to_have_count(0)
    await expect(pane.get_by_text("No workers yet")).to_be_visible()
    no_errors(recorder)


# --- the tabs ----------------------------------------------------------------------------------


async def test_tabs_follow_the_keyboard(sysop: tuple[Page, Recorder]) -> None:
    page, recorder = sysop
    tabs = page.locator("#sysop-tabs [role=tab]")
    names = await tabs.all_inner_texts()
    assert names[0] == "Workers" and names[-1] == "Console"

    async def selected(name: str) -> None:
        chosen = page.get_by_role("tab", name=name)
        await expect(chosen).to_be_focused()
        await expect(chosen).to_have_attribute("aria-selected", "true")
        await expect(chosen).to_have_attribute("tabindex", "0")
        await expect(page.locator("#sysop-tabs [aria-selected=true]")).to_have_count(1)
        await expect(page.locator("#sysop-tabs [tabindex='-1']")).to_have_count(len(names) - 1)
        await expect(page.locator("#sysop-panel [role=tabpanel]:visible")).to_have_count(1)
        await expect(page.get_by_role("tabpanel", name=name)).to_be_visible()

    await page.get_by_role("tab", name="Workers").focus()
    await page.keyboard.press("ArrowRight")
    await selected("Pools & realms")
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("ArrowLeft")  # wraps round to the last
    await selected("Console")
    await page.keyboard.press("Home")
    await selected("Workers")
    await page.keyboard.press("End")
    await selected("Console")
    await page.get_by_role("tab", name="Users").click()
    await selected("Users")
    no_errors(recorder)


# --- pools, realms and models -------------------------------------------------------------------


async def test_pools_realms_and_models(
    realm: Realm, browser: Browser, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub)
    context, page, recorder = await open_sysop(browser, realm)
    try:
        pane = await tab(page, "Pools & realms")
        await expect(pane.get_by_text("No pools yet.")).to_be_visible()
        realms = pane.get_by_role("table", name="Realms")
        chat_realm = realms.locator("tbody tr", has=page.locator("th", has_text="$CHAT"))
        await expect(chat_realm.locator("td").first).to_have_text(re.compile(r"\bchat\b"))
        await expect(chat_realm.locator("td").nth(3)).to_have_text("1")  # its one worker

        form = pane.locator("form", has_text="Add a pool")
        await form.get_by_label("Name").fill("fast")  # made `$FAST`
        await form.get_by_label("Strategy").select_option("least_busy")
        await form.get_by_label("w1 (chat)").check()
        await form.get_by_role("button", name="Add pool").click()
        await expect(form.locator("[role=status]")).to_have_text("Created pool $FAST")
        row = pane.get_by_role("table", name="Pools").locator("tbody tr", has_text="$FAST")
        await expect(row).to_contain_text("least_busy")
        await expect(row).to_contain_text("w1")
        await expect(form.get_by_label("w1 (chat)")).not_to_be_checked()
        # The composer can now send to the pool (the lead's picker reads pool_update too).
        await expect(page.locator("#model-select option[value='$FAST']")).to_have_count(1)
        await screenshot(page, "sysop-routing")

        await row.get_by_role("button", name="Remove pool $FAST").click()
        await answer_confirm(page, "Remove pool $FAST?")
        await expect(row).to_have_count(0)

        pane = await tab(page, "Models")
        models = pane.get_by_role("table", name="Hugging Face models")
        form = pane.locator("form", has_text="Add a Hugging Face model")
        await form.get_by_label("Model id").fill("acme/second")
        await form.get_by_label("Type").select_option("chat")
        await form.get_by_role("button", name="Add model").click()
        await expect(form.locator("[role=status]")).to_have_text(
            "Added Hugging Face model: acme/second"
        )
        await expect(models.locator("tbody tr", has_text="acme/second")).to_contain_text("chat")
        offered = pane.get_by_role("table", name="Models the workers offer")
        await expect(offered.locator("tbody tr", has_text="w1")).to_contain_text("llama3")
        await screenshot(page, "sysop-models")

        second = models.locator("tbody tr", has_text="acme/second")
        await second.get_by_role("button", name="Remove model acme/second").click()
        await answer_confirm(page, "acme/second")
        await expect(second).to_have_count(0)
        no_errors(recorder)
    finally:
        await context.close()


async def test_models_added_before_the_page_opened_are_listed(
    realm: Realm, browser: Browser
) -> None:
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        reply = await bus.request(
            {"type": "add_huggingface_model", "model": {"name": "acme/first", "type": "chat"}}
        )
        assert reply["type"] == "ok", reply
    context, page, _ = await open_sysop(browser, realm)
    try:
        pane = await tab(page, "Models")
        models = pane.get_by_role("table", name="Hugging Face models")
        await expect(models.locator("tbody tr", has_text="acme/first")).to_have_count(1)
    finally:
        await context.close()


# --- users -------------------------------------------------------------------------------------


async def test_a_ban_reaches_the_guest_at_once_and_unban_flips_it_back(
    sysop: tuple[Page, Recorder], guest: Page
) -> None:
    page, recorder = sysop
    nickname = await nickname_of(guest)
    row = await user_row(page, nickname)
    await expect(row.locator(".badge.online")).to_have_text("online")
    await expect(row.locator("td.state")).to_have_text("Active")

    # The sysop's own row cannot be banned.
    own = await user_row(page, "hal")
    await expect(own.get_by_role("button", name="Ban hal")).to_be_disabled()

    await row.get_by_role("button", name=f"Ban {nickname}").click()
    await answer_confirm(page, f"Ban {nickname}?")
    await expect(page.locator("#pane-users [role=status]")).to_have_text("User banned")
    await expect(row.locator("td.state")).to_have_text("Banned")
    await expect(row).to_have_class(re.compile(r"\bbanned\b"))

    await expect(guest.locator("#banner")).to_be_visible()
    await expect(guest.locator("#banner")).to_contain_text("banned")
    await expect(guest.locator("#submit-button")).to_be_disabled()
    await expect(guest.locator("#connection")).to_have_text("Banned")
    await expect(row.locator(".badge.online")).to_have_count(0)  # their connection is gone
    await screenshot(page, "sysop-users")

    await row.get_by_role("button", name=f"Unban {nickname}").click()
    await expect(page.locator("#pane-users [role=status]")).to_have_text("User unbanned")
    await expect(row.locator("td.state")).to_have_text("Active")
    await expect(row.get_by_role("button", name=f"Ban {nickname}")).to_be_enabled()
    no_errors(recorder)


async def test_roles_the_broker_allows(sysop: tuple[Page, Recorder], guest: Page) -> None:
    """A guest can be made premium (at once, on their page too) but never a sysop, which
    needs a password; the last sysop cannot demote themself."""
    page, recorder = sysop
    nickname = await nickname_of(guest)
    row = await user_row(page, nickname)
    role = row.get_by_label(f"Role of {nickname}")
    status = page.locator("#pane-users [role=status]")
    await expect(role).to_have_value("guest")

    await role.select_option("premium")
    await expect(status).to_have_text(f"{nickname} is now premium")
    await expect(guest.locator("#user-info")).to_have_text(f"{nickname} (premium)")
    await expect(role).to_have_value("premium")

    await role.select_option("sysop")
    await answer_confirm(page, f"Make {nickname} a sysop?")
    await expect(status).to_contain_text("only a registered user")
    await expect(status).to_have_class(re.compile(r"\berror\b"))
    await expect(role).to_have_value("premium")  # put back: nothing changed
    await expect(guest.locator("#user-info")).to_have_text(f"{nickname} (premium)")

    own = (await user_row(page, "hal")).get_by_label("Role of hal")
    await own.select_option("user")
    await expect(status).to_contain_text("last sysop")
    await expect(own).to_have_value("sysop")
    await expect(page.locator("#user-info")).to_have_text("hal (sysop)")
    no_errors(recorder)


# --- running queries and statistics --------------------------------------------------------


async def test_a_running_query_can_be_terminated(
    realm: Realm, sysop: tuple[Page, Recorder], guest: Page, ollama_stub: StubServer
) -> None:
    page, recorder = sysop
    await ollama_stub.reset()
    await ollama_stub.configure(chunk_delay=0.5, reply=LONG_REPLY)
    await realm.add_worker("w1", ollama_stub)
    try:
        pane = await tab(page, "Running")
        await expect(pane.get_by_text("Nothing is running.")).to_be_visible()

        prompt = "Tell me a long <b>story</b> & <img src=x>"  # text, never markup
        await guest.locator("#prompt-input").fill(prompt)
        await guest.get_by_role("button", name="Send").click()
        card = guest.locator("#results li.result").first
        await expect(card.locator(".answer")).to_contain_text("word1")  # it is streaming

        row = pane.locator("tbody tr", has_text=prompt)
        await expect(row).to_be_visible()
        await expect(pane.locator("b, img")).to_have_count(0)
        await expect(row).to_contain_text(await nickname_of(guest))
        await expect(row).to_contain_text("w1")
        await expect(row).to_contain_text(re.compile(r"\d+\.\d\d s"))  # how long it waited
        await screenshot(page, "sysop-running")

        await row.get_by_role("button", name=re.compile(r"^Terminate query")).click()
        await answer_confirm(page, "Terminate this chat query")
        await expect(pane.locator("[role=status]")).to_have_text("Terminated 1 query")
        await expect(guest.locator("#results li.result.error")).to_be_visible()
        await expect(guest.locator("#results li.result.error")).to_contain_text(
            re.compile("terminated", re.I)
        )
        await expect(pane.get_by_text("Nothing is running.")).to_be_visible()
        await expect(row).to_have_count(0)
        no_errors(recorder)
    finally:
        await ollama_stub.reset()


async def test_statistics_draw_charts_after_a_query(
    realm: Realm, sysop: tuple[Page, Recorder], guest: Page, ollama_stub: StubServer
) -> None:
    page, recorder = sysop
    await ollama_stub.reset()
    await ollama_stub.configure(reply="Short and sweet")
    await realm.add_worker("w1", ollama_stub)
    await guest.locator("#prompt-input").fill("Hello there")
    await guest.get_by_role("button", name="Send").click()
    await expect(guest.locator("#results li.result .answer")).to_have_text("Short and sweet")

    pane = await tab(page, "Statistics")
    figures = pane.locator("dl.figures")
    await expect(figures.locator(".figure", has_text="Queries").locator("dd")).to_have_text("1")
    chat_row = pane.get_by_role("table", name="Totals by query type").locator("tbody tr")
    await expect(chat_row.locator("th")).to_have_text(["chat"])
    await expect(chat_row.locator("td").first).to_have_text("1")
    charts = pane.locator("svg[role=img]")
    await expect(charts).to_have_count(2)
    await expect(charts.nth(0)).to_have_attribute(
        "aria-label",
        re.compile(r"^Queries per query type, .*: chat 1 in total, at most 1 in one bucket\.$"),
    )
    await expect(charts.nth(1)).to_have_attribute(
        "aria-label",
        re.compile(r"^Mean latency per query type, .*: chat from \d+\.\d\d s to \d+\.\d\d s"),
    )
    await expect(pane.locator(".chart-legend").first).to_have_text("chat")
    # The numbers, for a screen reader, one click away.
    details = pane.locator("details.chart-numbers").first
    await details.get_by_text("Show the numbers").click()
    await expect(details.locator("tbody tr")).to_have_count(1)
    await expect(details.locator("tbody td")).to_have_text("1")
    await screenshot(page, "sysop-stats")

    await pane.get_by_label("Show").select_option("worker")
    await expect(charts.nth(0)).to_have_attribute(
        "aria-label", re.compile(r"^Queries per worker, .*: w1 1 in total")
    )
    await expect(pane.locator(".chart-legend").first).to_have_text("w1")
    no_errors(recorder)


# --- broadcast ---------------------------------------------------------------------------------


async def test_a_broadcast_reaches_a_guest_page(sysop: tuple[Page, Recorder], guest: Page) -> None:
    page, recorder = sysop
    pane = await tab(page, "Broadcast")
    text = "Maintenance at <b>noon</b> & all's well"  # shown as text, not markup
    await pane.get_by_label("Message to everyone connected").fill(text)
    await pane.get_by_role("button", name="Send to everyone").click()
    await expect(pane.locator("[role=status]")).to_have_class(re.compile(r"\bok\b"))
    await expect(pane.get_by_label("Message to everyone connected")).to_have_value("")
    notice = guest.locator("#results li.notice", has_text="Maintenance")
    await expect(notice).to_have_text(f"Sysop: {text}")
    await expect(guest.locator("#results li.notice b")).to_have_count(0)
    await screenshot(page, "sysop-broadcast")
    no_errors(recorder)


# --- console -----------------------------------------------------------------------------------


async def test_the_console_shows_live_messages_and_filters_them(
    realm: Realm, sysop: tuple[Page, Recorder], ollama_stub: StubServer
) -> None:
    page, recorder = sysop
    pane = await tab(page, "Console")
    lines = pane.locator("ol.console li")
    # The panel asks for statistics at once: the request and its reply are there.
    await expect(
        lines.filter(has_text=re.compile(r"^\d\d:\d\d:\d\d → get_stats "))
    ).not_to_have_count(0)
    await expect(
        lines.filter(has_text=re.compile(r"^\d\d:\d\d:\d\d ← system_stats \{"))
    ).not_to_have_count(0)

    await ollama_stub.reset()
    await realm.add_worker("w-console", ollama_stub)  # another connection adds it: live news
    update = lines.filter(has_text=re.compile(r"← worker_update .*w-console"))
    await expect(update).not_to_have_count(0)

    await pane.get_by_label("Filter by type").fill("worker_upd")
    await expect(update).not_to_have_count(0)
    await expect(lines.filter(has_not_text="worker_update")).to_have_count(0)
    await screenshot(page, "sysop-console")

    # Paused, nothing new shows; resumed, what came meanwhile is there.
    await pane.get_by_label("Filter by type").fill("")
    await pane.get_by_role("button", name="Pause").click()
    await expect(pane.get_by_role("button", name="Resume")).to_have_attribute(
        "aria-pressed", "true"
    )
    shown = await lines.count()
    await realm.add_worker("w-paused", ollama_stub)
    await expect(page.locator("#pane-workers tr[data-worker='w-paused']")).to_have_count(1)
    assert await lines.count() == shown
    await pane.get_by_role("button", name="Resume").click()
    # (a worker_update line is cut at 300 characters, before the second worker: the note)
    note = re.compile(r"← sysop_message .*Added worker: w-paused")
    await expect(lines.filter(has_text=note)).not_to_have_count(0)

    await pane.get_by_role("button", name="Clear").click()
    await expect(lines.filter(has_text="w-paused")).to_have_count(0)
    no_errors(recorder)


# --- a phone -----------------------------------------------------------------------------------


async def test_the_panel_fits_a_phone(
    browser: Browser, realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("a-worker-with-a-rather-long-name", ollama_stub, models=["m" * 60])
    context, page, recorder = await open_sysop(browser, realm, PHONE)
    try:
        for name in TABS:
            await tab(page, name)
            if name == "Workers":
                await expect(page.locator("tr[data-worker]")).to_have_count(1)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name}: the page is {width}px wide"
        await tab(page, "Workers")
        await screenshot(page, "sysop-phone")
        no_errors(recorder)
    finally:
        await context.close()
