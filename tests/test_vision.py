"""Vision queries: images checked and normalised by the broker, sent whole or in chunks, and
delivered to each protocol in its own shape (SPEC §3, §5.1)."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from rentahal.bus.messages import VisionChunk
from rentahal.bus.uploads import ChunkedUploads
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer
from tests.conftest import Realm


def encoded(image: Image.Image, fmt: str, **save: Any) -> str:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return base64.b64encode(out.getvalue()).decode()


def photo(width: int = 1600, height: int = 1200) -> Image.Image:
    """A smooth gradient: a real JPEG of a realistic size that compresses well."""
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient))


def transparent_badge() -> Image.Image:
    badge = Image.new("RGBA", (800, 800), (0, 0, 0, 0))  # transparent black
    badge.paste((200, 0, 0, 255), (200, 200, 600, 600))
    return badge


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


async def vision(bus: BusClient, image: str, model_name: str = "") -> dict[str, Any]:
    accepted = await bus.request(
        {
            "type": "submit_query",
            "query": {
                "prompt": "what is this?",
                "query_type": "vision",
                "image": image,
                "model_name": model_name,
            },
        }
    )
    if accepted["type"] != "query_accepted":
        return accepted
    return await bus.expect(
        where=lambda m: (
            m.get("query_id") == accepted["query_id"] and m["type"] in ("query_result", "error")
        ),
        within=20,
    )


async def test_images_reach_ollama_resized_and_flattened(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        for image in (encoded(photo(), "JPEG", quality=95), encoded(transparent_badge(), "PNG")):
            result = await vision(bus, image)
            assert result["type"] == "query_result", result
            assert result["result"] == "echo: what is this?"
    chats = [r["json"] for r in await ollama_stub.requests() if r["path"] == "/api/chat"]
    assert len(chats) == 2
    sent = [decoded(chat["messages"][-1]["images"][0]) for chat in chats]
    assert [image.format for image in sent] == ["JPEG", "JPEG"]
    assert sent[0].size == (512, 384)  # the 1600×1200 photo, fitted into 512×512
    assert sent[1].size == (512, 512) and sent[1].mode == "RGB"
    # The transparent corner became white, the opaque middle kept its colour.
    assert all(c > 240 for c in sent[1].getpixel((5, 5)))
    red, green, blue = sent[1].getpixel((256, 256))
    assert red > 150 and green < 60 and blue < 60


async def test_images_reach_openai_as_image_content_parts(
    realm: Realm, openai_stub: StubServer
) -> None:
    await openai_stub.reset()
    await realm.add_worker("gpt-eyes", openai_stub, type="vision", models=["gpt-4o-mini"])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        result = await vision(bus, encoded(photo(900, 900), "PNG"))
    assert result["type"] == "query_result", result
    chat = next(
        r["json"] for r in await openai_stub.requests() if r["path"].endswith("/completions")
    )
    text, picture = chat["messages"][-1]["content"]
    assert text == {"type": "text", "text": "what is this?"}
    assert picture["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert picture["image_url"]["url"].startswith(prefix)
    assert decoded(picture["image_url"]["url"].removeprefix(prefix)).size == (512, 512)


async def test_images_reach_a_rentahal_worker_in_its_image_field(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("node-eyes", rentahal_stub, type="vision")
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        result = await vision(bus, encoded(photo(), "JPEG"))
    assert result["type"] == "query_result", result
    predict = next(r["json"] for r in await rentahal_stub.requests() if r["path"] == "/predict")
    assert predict["type"] == "vision" and predict["prompt"] == "what is this?"
    assert decoded(predict["image"]).size == (512, 384)


def tiny_png() -> str:
    return encoded(Image.new("RGB", (4, 4), "blue"), "PNG")


@pytest.mark.parametrize(
    ("name", "image", "code_in_message"),
    [
        ("not an image", base64.b64encode(b"plain text, not pixels" * 20).decode(), "bad_image"),
        ("truncated", encoded(photo(), "JPEG")[:4000], "bad_image"),
        ("corrupt base64", "%%%" + tiny_png(), "bad_image"),
        ("40 megapixels", encoded(Image.new("1", (8000, 5000)), "PNG"), "image_too_large"),
    ],
)
async def test_bad_images_are_refused_and_nothing_is_stored(
    realm: Realm, ollama_stub: StubServer, name: str, image: str, code_in_message: str
) -> None:
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        refused = await vision(bus, image)
        assert refused["type"] == "error" and refused["code"] == "invalid", (name, refused)
        assert code_in_message in refused["message"]
        history = await bus.request({"type": "get_previous_queries"})
        assert history["data"] == []


async def send_chunks(bus: BusClient, image: str, image_id: str, order: list[int], n: int) -> None:
    size = -(-len(image) // n)
    for index in order:
        await bus.send(
            {
                "type": "vision_chunk",
                "id": f"{image_id}-{index}",
                "chunk_id": index,
                "total_chunks": n,
                "chunk_data": image[index * size : (index + 1) * size],
                "image_id": image_id,
                "prompt": "what is this?",
            }
        )


async def test_an_image_sent_in_chunks_out_of_order_becomes_one_query(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    image = encoded(photo(), "JPEG", quality=95)
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        await send_chunks(bus, image, "img-1", [2, 0, 0, 1, 3], 4)  # chunk 0 twice
        acks = [await bus.expect("vision_chunk_received", within=10) for _ in range(4)]
        assert [a["received"] for a in acks] == [1, 2, 2, 3]
        assert all(a["total_chunks"] == 4 and a["image_id"] == "img-1" for a in acks)
        complete = await bus.expect("vision_upload_complete", within=10)
        assert complete["image_id"] == "img-1" and complete["response_to"] == "img-1-3"
        accepted = await bus.expect("query_accepted", lambda m: m.get("response_to") == "img-1-3")
        result = await bus.expect(
            "query_result", lambda m: m["query_id"] == accepted["query_id"], within=20
        )
        assert result["result"] == "echo: what is this?"
    chat = next(r["json"] for r in await ollama_stub.requests() if r["path"] == "/api/chat")
    assert decoded(chat["messages"][-1]["images"][0]).size == (512, 384)


async def test_chunks_of_one_user_never_join_another_users_image(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    image = encoded(photo(), "JPEG")
    alice_cookie, bob_cookie = await realm.broker.guest_cookie(), await realm.broker.guest_cookie()
    async with (
        realm.broker.bus(cookie=alice_cookie) as alice,
        realm.broker.bus(cookie=bob_cookie) as bob,
    ):
        await send_chunks(alice, image, "shared-id", [0], 2)
        await alice.expect("vision_chunk_received")
        # Bob sends the "missing" chunk of the same image id: it starts his own upload.
        await send_chunks(bob, image, "shared-id", [1], 2)
        theirs = await bob.expect("vision_chunk_received")
        assert theirs["received"] == 1
        assert not [m for m in alice.seen if m["type"] == "vision_upload_complete"]
        clash = await bob.request(
            {
                "type": "vision_chunk",
                "chunk_id": 1,
                "total_chunks": 2,
                "chunk_data": "AAAA",
                "image_id": "shared-id",
            }
        )
        assert clash["type"] == "error" and clash["code"] == "conflict"
        wrong_total = await bob.request(
            {
                "type": "vision_chunk",
                "chunk_id": 0,
                "total_chunks": 3,
                "chunk_data": "AAAA",
                "image_id": "shared-id",
            }
        )
        assert wrong_total["type"] == "error" and wrong_total["code"] == "invalid"


def chunk(image_id: str, index: int, total: int, data: str = "AAAA") -> VisionChunk:
    return VisionChunk(
        type="vision_chunk", chunk_id=index, total_chunks=total, chunk_data=data, image_id=image_id
    )


def test_unfinished_uploads_expire() -> None:
    uploads = ChunkedUploads(ttl=0.0)
    assert uploads.add("u", chunk("a", 0, 2)).received == 1
    # The first chunk expired: the second one starts a new upload instead of finishing it.
    progress = uploads.add("u", chunk("a", 1, 2))
    assert progress.received == 1 and progress.query is None


def test_uploads_are_bounded_per_user() -> None:
    uploads = ChunkedUploads()
    for n in range(4):
        uploads.add("u", chunk(f"img-{n}", 0, 2))
    with pytest.raises(ProtocolError) as refused:
        uploads.add("u", chunk("img-5", 0, 2))
    assert refused.value.code == ErrorCode.USER_LIMIT
    assert uploads.add("someone else", chunk("img-5", 0, 2)).received == 1
    with pytest.raises(ProtocolError) as out_of_range:
        uploads.add("u", chunk("img-0", 7, 2))
    assert out_of_range.value.code == ErrorCode.INVALID


async def test_an_image_uploaded_as_a_file_over_http(realm: Realm, ollama_stub: StubServer) -> None:
    await ollama_stub.reset()
    await realm.add_worker("eyes", ollama_stub, type="vision", models=["llama3"])
    png = base64.b64decode(encoded(transparent_badge(), "PNG"))
    owner = {"Authorization": f"Bearer {realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=realm.broker.url, timeout=30) as http:
        answered = await http.post(
            "/api/v1/queries/upload?wait=20",
            data={"prompt": "what is this?", "query_type": "vision"},
            files={"file": ("badge.png", png, "image/png")},
            headers=owner,
        )
        assert answered.status_code == 202, answered.text
        query = answered.json()["query"]
        assert query["state"] == "done" and query["result"] == "echo: what is this?"
        too_big = await http.post(
            "/api/v1/queries/upload",
            data={"query_type": "vision", "prompt": "x"},
            files={"file": ("huge.bin", b"\0" * (12 * 1024 * 1024 + 1), "image/png")},
            headers=owner,
        )
        assert too_big.status_code == 413 and too_big.json()["detail"]["code"] == "too_large"
        not_image = await http.post(
            "/api/v1/queries/upload",
            data={"query_type": "vision", "prompt": "x"},
            files={"file": ("notes.txt", b"hello there", "text/plain")},
            headers=owner,
        )
        assert not_image.status_code == 422 and "bad_image" in not_image.json()["detail"]["message"]
        anonymous = await http.post(
            "/api/v1/queries/upload", files={"file": ("a.png", png, "image/png")}
        )
        assert anonymous.status_code == 401
    chat = next(r["json"] for r in await ollama_stub.requests() if r["path"] == "/api/chat")
    assert decoded(chat["messages"][-1]["images"][0]).size == (512, 512)
