"""Claude and Hugging Face models from the configuration become workers: routed, health-checked
and accounted like any other, with keys that stay secret (SPEC §5.1, §9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, create_sysop

CLAUDE_KEY = "sk-ant-from-the-config-0123456789"
HF_KEY = "hf_from_the_config_0123456789"
MODELS = "/api/v1/huggingface/models"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def anthropic_stub() -> AsyncIterator[StubServer]:
    async with StubServer("anthropic", models=["claude-haiku-4-5"], api_key=CLAUDE_KEY) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hf_stub() -> AsyncIterator[StubServer]:
    async with StubServer("huggingface", models=["tiny-model"], api_key=HF_KEY) as stub:
        yield stub


def cloud_env(anthropic: StubServer, hf: StubServer) -> dict[str, str]:
    return FAST_ENV | {
        "RENTAHAL_CLAUDE_API_KEY": CLAUDE_KEY,
        "RENTAHAL_CLAUDE_ENDPOINT": anthropic.url,
        "RENTAHAL_CLAUDE_MODEL_NAME": "claude-haiku-4-5",
        "RENTAHAL_HUGGINGFACE_API_KEY": HF_KEY,
        "RENTAHAL_HUGGINGFACE_ENDPOINT": f"{hf.url}/hf-inference/models",
        "RENTAHAL_HUGGINGFACE_DEFAULT_MODELS": "tiny-model",
        "HF_HUB_OFFLINE": "1",
    }


async def workers(broker: BrokerProcess, key: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        listed = await http.get("/api/v1/workers", headers={"Authorization": f"Bearer {key}"})
        return {w["name"]: w for w in listed.json()}


async def ask(broker: BrokerProcess, key: str, prompt: str, model_name: str) -> dict[str, Any]:
    async with broker.bus(api_key=key) as bus:
        accepted = await bus.request(
            {"type": "submit_query", "query": {"prompt": prompt, "model_name": model_name}}
        )
        assert accepted["type"] == "query_accepted", accepted
        return await bus.expect(
            where=lambda m: (
                m.get("query_id") == accepted["query_id"] and m["type"] in ("query_result", "error")
            ),
            within=20,
        )


async def test_configured_cloud_models_serve_with_their_secret_keys(
    tmp_path: Path, anthropic_stub: StubServer, hf_stub: StubServer
) -> None:
    key = await create_sysop(tmp_path)
    env = cloud_env(anthropic_stub, hf_stub)
    async with BrokerProcess(tmp_path, env=env) as broker:

        async def both_healthy() -> bool:
            listed = await workers(broker, key)
            return all(
                listed.get(name, {}).get("health_score") == 100
                for name in ("claude", "hf-tiny-model")
            )

        await eventually(both_healthy, within=20)
        listed = await workers(broker, key)
        assert listed["claude"]["kind"] == "claude"
        assert listed["hf-tiny-model"]["address"] == f"{hf_stub.url}/hf-inference/models/tiny-model"

        claude = await ask(broker, key, "hello claude", "claude")
        assert claude["type"] == "query_result" and claude["result"] == "echo: hello claude"
        assert claude["cost"] > 0  # accounted like any worker
        hf = await ask(broker, key, "hello hub", "hf-tiny-model")
        assert hf["type"] == "query_result" and hf["result"] == "echo: hello hub"

        sent = [r for r in await anthropic_stub.requests() if r["path"] == "/v1/messages"]
        assert sent[-1]["headers"]["x-api-key"] == CLAUDE_KEY
        assert sent[-1]["json"]["model"] == "claude-haiku-4-5"
        chats = [r for r in await hf_stub.requests() if r["path"].endswith("/chat/completions")]
        assert chats[-1]["path"] == "/hf-inference/models/tiny-model/v1/chat/completions"
        assert chats[-1]["headers"]["authorization"] == f"Bearer {HF_KEY}"

        # A sysop's new Hugging Face model is a worker at once; removing it removes it.
        async with broker.bus(api_key=key) as sysop:
            added = await sysop.request(
                {"type": "add_huggingface_model", "model": {"name": "other-model"}}
            )
            assert added["type"] == "ok", added
            assert "hf-other-model" in await workers(broker, key)
            removed = await sysop.request(
                {"type": "remove_huggingface_model", "model_name": "other-model"}
            )
            assert removed["type"] == "ok", removed
        assert "hf-other-model" not in await workers(broker, key)

        # And over REST, as the same sysop.
        async with httpx.AsyncClient(
            base_url=broker.url,
            headers={"Authorization": f"Bearer {key}"},
        ) as rest:
            added_by_rest = await rest.post(
                MODELS, json={"name": "org/third-model", "type": "chat"}
            )
            assert added_by_rest.status_code == 201, added_by_rest.text
            assert added_by_rest.json() == {"name": "org/third-model", "type": "chat"}
            assert "hf-org-third-model" in await workers(broker, key)
            again = await rest.post(MODELS, json={"name": "org/third-model"})
            assert again.status_code == 409 and again.json()["detail"]["code"] == "conflict"
            listed_models = (await rest.get(MODELS)).json()
            assert {"name": "org/third-model", "type": "chat"} in listed_models
            assert (await rest.delete(f"{MODELS}/org/third-model")).status_code == 204
            assert "hf-org-third-model" not in await workers(broker, key)
            gone = await rest.delete(f"{MODELS}/org/third-model")
            assert gone.status_code == 404 and gone.json()["detail"]["code"] == "not_found"
            anonymous = await rest.post(MODELS, json={"name": "x"}, headers={"Authorization": ""})
            assert anonymous.status_code == 401
    # The keys never reach a log line.
    assert CLAUDE_KEY not in broker.output and HF_KEY not in broker.output


async def test_without_a_key_there_is_no_cloud_worker(
    tmp_path: Path, anthropic_stub: StubServer, hf_stub: StubServer
) -> None:
    key = await create_sysop(tmp_path)
    env = cloud_env(anthropic_stub, hf_stub)
    async with BrokerProcess(tmp_path, env=env):
        pass  # the first start made the workers
    del env["RENTAHAL_CLAUDE_API_KEY"], env["RENTAHAL_HUGGINGFACE_API_KEY"]
    async with BrokerProcess(tmp_path, env=env) as broker:
        assert await workers(broker, key) == {}
