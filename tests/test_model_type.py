"""The seed's `model_type`: `speech` asks for a spoken answer, `claude` and `huggingface` pick
that backend when `model_name` does not say, anything else is refused."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from rentahal.core.specs import QuerySpec
from rentahal.core.stages import step_model_type
from rentahal.testing.process import StubServer
from tests.conftest import Realm
from tests.test_intents import final
from tests.test_routing import make_router, worker


def test_speech_asks_for_a_spoken_answer_and_case_and_blank_are_forgiven() -> None:
    spoken = QuerySpec(prompt="hi", model_type="Speech", options={"stream": False})
    assert spoken.model_type == "speech" and spoken.options == {"stream": False, "speak": True}
    assert QuerySpec(prompt="hi", model_type="").model_type == "worker_node"
    assert QuerySpec(prompt="hi", model_type=" claude ").options == {}


def test_an_unknown_model_type_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="worker_node, speech, claude, huggingface"):
        QuerySpec(prompt="hi", model_type="gpt")


def test_a_backend_model_type_routes_to_that_backend_unless_the_model_name_says() -> None:
    claude = dataclasses.replace(worker("claude", health=50), kind="claude")
    router = make_router(worker("llama", health=100), claude)
    assert router.select("chat", "").worker.name == "llama"  # type: ignore[union-attr]
    assert router.select("chat", "", model_type="claude").worker.name == "claude"  # type: ignore[union-attr]
    assert router.select("chat", "llama", model_type="claude").worker.name == "llama"  # type: ignore[union-attr]
    assert router.select("chat", "", model_type="huggingface") is None
    assert not router.could_serve("chat", "", model_type="huggingface")
    assert router.select("chat", "", model_type="speech").worker.name == "llama"  # type: ignore[union-attr]


def test_only_the_answering_step_is_routed_by_model_type() -> None:
    @dataclasses.dataclass
    class Step:
        query_type: str = "speech"
        options: dict[str, object] = dataclasses.field(default_factory=lambda: {"speak": True})
        stage: int = 0
        model_name: str = ""
        model_type: str = "claude"
        prompt: str = ""
        result: str | None = None

    assert [step_model_type(Step(stage=n)) for n in range(3)] == ["", "claude", ""]


async def test_a_seed_speech_query_is_answered_with_audio(realm: Realm) -> None:
    async with StubServer("openai", models=["gpt-4o-mini", "tts-1"]) as stub:
        await realm.add_worker("llm", stub, models=["gpt-4o-mini"])
        await realm.add_worker("voice", stub, type="tts", models=["tts-1"])
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            query = {"prompt": "say **hi**", "query_type": "chat", "model_type": "speech"}
            message = {"type": "submit_query", "query": {**query, "model_name": ""}}
            accepted = await bus.request(message, within=20)
            assert accepted["type"] == "query_accepted", accepted
            result = await final(bus, accepted["query_id"])
            assert result["result"] == "echo: say **hi**"  # the text answer stays whole
            assert base64.b64decode(result["audio"])[:4] == b"RIFF"
            # What was spoken suits speech: the markdown is not read aloud.
            spoken = [
                r["json"]["input"]
                for r in await stub.requests()
                if r["path"].endswith("/audio/speech")
            ]
            assert spoken == ["echo: say hi"], spoken

            message = {"type": "submit_query", "query": {**query, "model_type": "gpt"}}
            refused = await bus.request(message, within=20)
            assert refused["type"] == "error", refused
            assert refused["code"] == "invalid" and "worker_node, speech" in refused["message"]
