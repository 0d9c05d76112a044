"""The composer and the answers in real headless Chromium: images in (file, drop), images out
(the gallery), highlighted code, preferences kept across reloads, and the reconnecting
indicator when the broker goes away and comes back."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from PIL import Image
from playwright.async_api import Browser, Page, expect

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from tests.browser import Recorder, open_page, screenshot
from tests.conftest import FAST_ENV, Realm

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SD_META = re.compile(r"^sd · \d+\.\d{2} s · \$\d\.\d{4}$")  # worker · time · cost
RECONNECTING = re.compile(r"^Reconnecting in \d+ s…$")


def png(width: int = 900, height: int = 600) -> bytes:
    """A real picture: a colour gradient, as a PNG."""
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sd_stub() -> AsyncIterator[StubServer]:
    async with StubServer("a1111", models=[CHECKPOINT]) as stub:
        yield stub


async def last_chat_images(stub: StubServer) -> list[str]:
    chats = [r["json"] for r in await stub.requests() if r["path"] == "/api/chat"]
    return chats[-1]["messages"][-1].get("images", []) if chats else []


async def test_an_uploaded_image_reaches_the_vision_worker(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder], tmp_path: Path
) -> None:
    page, _ = desktop
    await ollama_stub.reset()
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llava"])
    picture = tmp_path / "gradient.png"
    picture.write_bytes(png())

    await page.get_by_label("Query type").select_option("vision")
    await expect(page.get_by_label("Worker, pool or model")).to_contain_text("Any vision worker")
    # Sending without an image explains what is missing.
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#results li.notice.error")).to_contain_text("picture")

    await page.locator("#image-upload").set_input_files(picture)
    await expect(page.locator("#image-preview")).to_be_visible()
    await page.get_by_label("Prompt").fill("What is in this picture?")
    await page.get_by_role("button", name="Send").click()

    card = page.locator("#results li.result").first
    await expect(card.locator(".answer")).to_have_text("echo: What is in this picture?")
    await expect(card.locator(".tag")).to_have_text("vision")
    await expect(page.locator("#image-preview")).to_be_hidden()
    sent = await last_chat_images(ollama_stub)
    assert len(sent) == 1
    image = Image.open(io.BytesIO(base64.b64decode(sent[0])))
    assert abs(image.width / image.height - 1.5) < 0.01  # the same picture, fitted, not cropped
    await screenshot(page, "page-vision")


async def test_an_image_dropped_on_the_page_is_sent_for_vision(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    """Dropping an image picks the vision query type by itself."""
    page, _ = desktop
    await ollama_stub.reset()
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llava"])
    await page.get_by_label("Query type").select_option("vision")
    data = base64.b64encode(png(300, 300)).decode()
    await page.get_by_label("Query type").select_option("chat")
    await expect(page.locator("#image-drop-zone")).to_be_hidden()
    await page.get_by_label("Query type").select_option("vision")
    await page.locator("#image-drop-zone").evaluate(
        """(zone, data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
        }""",
        data,
    )
    await expect(page.locator("#image-preview")).to_be_visible()
    await page.get_by_role("button", name="Send").click()
    card = page.locator("#results li.result").first
    await expect(card.locator(".answer")).to_have_text("echo: Describe this image in detail")
    assert len(await last_chat_images(ollama_stub)) == 1


async def test_an_imagined_picture_lands_in_the_gallery(
    realm: Realm, sd_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await sd_stub.reset()
    await realm.add_worker("sd", sd_stub, type="imagine", models=[CHECKPOINT])
    await page.get_by_label("Query type").select_option("imagine")
    await page.get_by_label("Prompt").fill("a lighthouse at dusk")
    await page.get_by_role("button", name="Send").click()

    card = page.locator("#results li.result").first
    await expect(card.locator(".media img")).to_have_count(1)
    await expect(card.locator(".meta")).to_have_text(SD_META)
    gallery = page.locator("#gallery li")
    await expect(gallery).to_have_count(1)
    await expect(gallery.locator("figcaption")).to_contain_text("a lighthouse at dusk")
    link = gallery.get_by_role("link", name="Download")
    await expect(link).to_have_attribute("download", re.compile(r"^rentahal-\w{8}\.png$"))
    # The picture really is a picture the browser decoded.
    width = await gallery.locator("img").evaluate(
        "(img) => img.decode().then(() => img.naturalWidth)"
    )
    assert width == 512
    async with page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    assert (await download.path()).read_bytes().startswith(b"\x89PNG")
    await screenshot(page, "page-gallery")


CODE_REPLY = "Here you go:\n```python\ndef add(a, b):\n    return a + b  # sum\n```\nDone."


async def test_code_in_an_answer_is_set_apart_and_highlighted(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await ollama_stub.reset()
    await ollama_stub.configure(reply=CODE_REPLY)
    await realm.add_worker("w1", ollama_stub)
    await page.get_by_label("Prompt").fill("write add()")
    await page.get_by_role("button", name="Send").click()
    answer = page.locator("#results li.result .answer").first
    code = answer.locator("pre code")
    await expect(code).to_have_text("def add(a, b):\n    return a + b  # sum")
    await expect(code.locator(".tok-keyword")).to_have_text(["def", "return"])
    await expect(code.locator(".tok-comment")).to_have_text("# sum")
    await expect(answer.locator("pre")).to_have_attribute("data-language", "python")
    await expect(answer).to_contain_text("Here you go:")
    await expect(answer).to_contain_text("Done.")


async def test_preferences_are_kept_in_the_browser(
    realm: Realm, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await page.get_by_label("Query type").select_option("imagine")
    await page.get_by_label("Speak answers", exact=True).check()
    await page.get_by_text("Preferences").click()
    await page.get_by_label("Theme").select_option("dark")
    await page.get_by_label("Text size").select_option("20px")

    await page.reload()
    await expect(page.locator("#connection")).to_have_text("Connected")
    await expect(page.get_by_label("Query type")).to_have_value("imagine")
    await expect(page.get_by_label("Speak answers", exact=True)).to_be_checked()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 22, 20)", background
    assert await page.evaluate("getComputedStyle(document.documentElement).fontSize") == "20px"
    await screenshot(page, "page-dark")


async def test_shortcuts_clear_the_answers_and_toggle_speech(
    realm: Realm, ollama_stub: StubServer, desktop: tuple[Page, Recorder]
) -> None:
    page, _ = desktop
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub)
    await page.get_by_label("Prompt").fill("first")
    await page.get_by_label("Prompt").press("Control+Enter")
    await expect(page.locator("#results li.result .answer")).to_have_text("echo: first")
    # The query has ended (its cost is shown), so no late event of it makes a card again.
    await expect(page.locator("#cumulative")).to_contain_text("1 answer")
    await page.keyboard.press("Control+Shift+S")
    await expect(page.get_by_label("Speak answers", exact=True)).to_be_checked()
    await page.keyboard.press("Control+Shift+L")
    await expect(page.locator("#results li")).to_have_count(0)
    await expect(page.locator("#history li")).to_have_count(1)  # the history stays
    await page.get_by_role("button", name="All shortcuts").click()
    await expect(page.get_by_role("dialog")).to_contain_text("Ctrl+Shift+W")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_be_hidden()


async def test_the_page_shows_reconnecting_and_comes_back(browser: Browser, tmp_path: Path) -> None:
    """The broker stops: the page says it is reconnecting; it returns on the same port: the
    page reconnects as the same user by itself."""
    broker = BrokerProcess(tmp_path, env=FAST_ENV)
    await broker.start()
    try:
        context, page, _ = await open_page(browser, Realm(broker, ""))
        # Who the page is, once the broker's greeting has said (before it, "…").
        await expect(page.locator("#user-info")).not_to_have_text("…")
        who = await page.locator("#user-info").text_content()
        await broker.stop()
        await expect(page.locator("#connection")).to_have_text(
            re.compile(r"^Reconnecting in \d+ s…$")
        )
        await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        await screenshot(page, "page-reconnecting")
        await broker.start()
        await expect(page.locator("#connection")).to_have_text("Connected", timeout=40_000)
        await expect(page.locator("#user-info")).to_have_text(who or "")
        await context.close()
    finally:
        await broker.stop()
