"""The Bark text-to-speech engine, alone and tiered with piper, on a tiny random Bark model.

No registry package ships Bark weights, so the fixture builds a Bark of a few thousand random
parameters laid out as the hub's `suno/bark-small` directory is: config.json, the weights, the
nested generation config, a BERT tokenizer, and `speaker_embeddings_path.json` with one
voice's arrays. Its token ids are Bark's layout shrunk (8 semantic tokens, 16 codes per
codebook) and its lengths are tiny, so a request takes well under a second.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rentahal.worker.app import create_worker_app
from rentahal.worker.engines import BadInput, Engine, EngineOptions, EngineUnavailable, pick
from rentahal.worker.engines.bark import MAX_SEMANTIC_TOKENS, BarkEngine
from rentahal.worker.engines.piper import PiperEngine, default_voice
from rentahal.worker.engines.tiered_tts import WORD_LIMIT, TieredTtsEngine
from rentahal.worker.protocol import TtsRequest, TtsResponse
from rentahal.worker.service import WorkerService

pytestmark = pytest.mark.offline_models

SEMANTIC_TOKENS, CODES, CODEBOOKS = 8, 16, 8  # Bark: 10_000, 1024, 8
PIPER_RATE = 22_050
WORDS = ["hello", "world", "the", "cat", "sat", "on", "a", "mat"]


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """Nothing here may reach a hub (the engine also passes `local_files_only`)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            patch.setenv(name, "1")
        yield


def words(count: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(count))


def bert_tokenizer(folder: Path) -> Any:
    """A lower-casing WordPiece tokenizer like Bark's (multilingual BERT), on a tiny vocabulary."""
    from transformers import BertTokenizer

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    vocabulary += [*WORDS, "##s", ".", ",", "?"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    return BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)


def generation_config(text_tokens: int, max_new_tokens: int) -> dict[str, Any]:
    """Bark's nested generation config with its token layout shrunk: semantic tokens, then
    the end/pad token, then the text tokens; coarse codes after the semantic tokens."""
    text_offset = SEMANTIC_TOKENS + 2
    coarse_pad = SEMANTIC_TOKENS + 2 * CODES
    return {
        "semantic_config": {
            "eos_token_id": SEMANTIC_TOKENS,
            "max_new_tokens": max_new_tokens,
            "text_encoding_offset": text_offset,
            "text_pad_token": text_offset + text_tokens,
            "semantic_infer_token": text_offset + text_tokens + 1,
            "semantic_vocab_size": SEMANTIC_TOKENS,
            "max_input_semantic_length": 16,
        },
        "coarse_acoustics_config": {
            "coarse_semantic_pad_token": coarse_pad,
            "coarse_infer_token": coarse_pad + 2,
            "n_coarse_codebooks": 2,
            "max_coarse_input_length": 16,
            "max_coarse_history": 32,
            "sliding_window_len": 8,
        },
        "fine_acoustics_config": {
            "max_fine_history_length": 16,
            "max_fine_input_length": 32,
            "n_fine_codebooks": CODEBOOKS,
        },
        "sample_rate": 24_000,
        "codebook_size": CODES,
    }


def save_voice(path: Path, voice: str, rng: np.random.Generator) -> dict[str, str]:
    """One voice's speaker embeddings as the hub stores them; their paths for the json."""
    arrays = {
        "semantic_prompt": rng.integers(0, SEMANTIC_TOKENS, 10),
        "coarse_prompt": rng.integers(0, CODES, (2, 15)),
        "fine_prompt": rng.integers(0, CODES, (CODEBOOKS, 15)),
    }
    files = {}
    for key, array in arrays.items():
        relative = f"speaker_embeddings/{voice}_{key}.npy"
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(path / relative, array)
        files[key] = relative
    return files


@pytest.fixture(scope="module")
def bark_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkProcessor,
        BarkSemanticConfig,
        EncodecConfig,
    )

    root = tmp_path_factory.mktemp("models")
    tokenizer = bert_tokenizer(root / "bert-vocabulary")
    generation = generation_config(len(tokenizer), max_new_tokens=8)
    semantic, coarse = generation["semantic_config"], generation["coarse_acoustics_config"]
    layers: dict[str, Any] = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "block_size": 64}
    codec = EncodecConfig(
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[4, 2],  # 8 samples a frame
        codebook_size=CODES,
        target_bandwidths=[96.0],  # 8 codebooks of 4 bits at 3000 frames a second
        num_lstm_layers=1,
        kernel_size=3,
        last_kernel_size=3,
        residual_kernel_size=3,
    )
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(
            input_vocab_size=semantic["semantic_infer_token"] + 1,
            output_vocab_size=SEMANTIC_TOKENS + 2,
            **layers,
        ).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(
            input_vocab_size=coarse["coarse_infer_token"] + 1,
            output_vocab_size=coarse["coarse_infer_token"] + 1,
            **layers,
        ).to_dict(),
        fine_acoustics_config=BarkFineConfig(
            input_vocab_size=CODES + 1,
            output_vocab_size=CODES + 1,
            n_codes_total=CODEBOOKS,
            **layers,
        ).to_dict(),
        codec_config=codec.to_dict(),
    )
    assert codec.num_quantizers == CODEBOOKS
    torch.manual_seed(0)
    model = BarkModel(config)
    for layer in model.codec_model.quantizer.layers:  # Encodec starts with all-zero codebooks:
        layer.codebook.embed.normal_()  # make the sound depend on the codes
    path = root / "tiny-bark"
    model.save_pretrained(path)
    # transformers 5 cannot save a BarkGenerationConfig; the hub's file is plain json anyway.
    (path / "generation_config.json").write_text(json.dumps(generation))
    BarkProcessor(tokenizer=tokenizer).save_pretrained(path)
    embeddings = {
        "repo_or_path": "suno/bark-small",
        "v2/en_speaker_6": save_voice(path, "v2/en_speaker_6", np.random.default_rng(6)),
        # Listed but not downloaded, as after fetching only some of a hub repository's files.
        "v2/en_speaker_9": {
            key: f"speaker_embeddings/v2/en_speaker_9_{key}.npy"
            for key in ("semantic_prompt", "coarse_prompt", "fine_prompt")
        },
    }
    (path / "speaker_embeddings_path.json").write_text(json.dumps(embeddings))
    return path


@pytest.fixture(scope="module")
def bark(bark_model: Path) -> BarkEngine:
    engine = BarkEngine(EngineOptions(model=bark_model, threads=1))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def tiered(bark_model: Path) -> TieredTtsEngine:
    engine = TieredTtsEngine(EngineOptions(model=bark_model, threads=1))
    engine.load()
    return engine


def speak(engine: Engine, prompt: str, **fields: Any) -> tuple[TtsResponse, np.ndarray]:
    """The answer, and its WAV decoded (checking the header against the data)."""
    answer = engine.run(TtsRequest(prompt=prompt, **fields))
    assert isinstance(answer, TtsResponse)
    raw = base64.b64decode(answer.audio_base64, validate=True)
    with wave.open(io.BytesIO(raw)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
        assert audio.getframerate() == answer.sample_rate
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16)
        assert samples.size == audio.getnframes() > 0
    assert len(raw) == 44 + 2 * samples.size
    return answer, samples


def seeded(engine: Engine, prompt: str, seed: int, **fields: Any) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    return speak(engine, prompt, **fields)[1]


def not_bark(root: Path) -> Path:
    """A transformers model directory that is not Bark."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return root


def test_bark_needs_a_bark_model_directory(bark_model: Path, tmp_path: Path) -> None:
    piper_voice = default_voice()
    assert piper_voice is not None and piper_voice.is_file()
    for engine in (BarkEngine, TieredTtsEngine):
        assert (engine.role, engine.available(EngineOptions(model=bark_model))) == ("tts", True)
        assert not engine.available(EngineOptions())
        assert not engine.available(EngineOptions(model=tmp_path / "nowhere"))
        assert not engine.available(EngineOptions(model=not_bark(tmp_path / engine.__name__)))
        assert not engine.available(EngineOptions(model=piper_voice))
        assert not engine.available(EngineOptions(model=bark_model / "config.json"))
        with pytest.raises(EngineUnavailable):
            pick("tts", engine.name, EngineOptions())


def test_pick_prefers_bark_only_for_a_bark_directory(bark_model: Path) -> None:
    assert type(pick("tts", None, EngineOptions())) is PiperEngine
    assert type(pick("tts", None, EngineOptions(model=default_voice()))) is PiperEngine
    assert type(pick("tts", None, EngineOptions(model=bark_model))) is TieredTtsEngine
    assert type(pick("tts", "bark", EngineOptions(model=bark_model))) is BarkEngine
    assert type(pick("tts", "bark+fallback", EngineOptions(model=bark_model))) is TieredTtsEngine


def test_load_refuses_what_is_not_a_bark_model(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="does not exist"):
        BarkEngine(EngineOptions(model=tmp_path / "nowhere")).load()
    with pytest.raises(EngineUnavailable, match="not a Bark model"):
        BarkEngine(EngineOptions(model=not_bark(tmp_path / "llama"))).load()


def test_bark_speaks_a_wav_at_the_models_sample_rate(bark: BarkEngine, bark_model: Path) -> None:
    answer, samples = speak(bark, "hello world")
    assert answer.sample_rate == bark.sample_rate == 24_000
    # At most 8 semantic tokens (the directory's own limit) → at most 12 frames of 8 samples.
    assert samples.size <= 12 * 8
    assert bark.models == [bark_model.name]


def test_bark_speakers_are_the_presets_and_voices_in_the_directory(bark: BarkEngine) -> None:
    assert bark.speakers == ["en_male_1", "v2/en_speaker_6"]
    preset = seeded(bark, "hello world", 1, speaker="en_male_1")
    assert np.array_equal(preset, seeded(bark, "hello world", 1, speaker="v2/en_speaker_6"))
    assert not np.array_equal(preset, seeded(bark, "hello world", 1))  # the voice matters


@pytest.mark.parametrize(
    "speaker",
    ["klingon_male", "en_female_1", "v2/en_speaker_9", "v2/en_speaker_0", "/etc/passwd", "x.npz"],
)
def test_bark_refuses_a_voice_that_is_not_in_its_directory(bark: BarkEngine, speaker: str) -> None:
    with pytest.raises(BadInput) as refused:
        bark.run(TtsRequest(prompt="hello", speaker=speaker))
    assert refused.value.code == "unknown_speaker"
    assert "en_male_1, v2/en_speaker_6" in refused.value.message
    if speaker == "en_female_1":
        assert "v2/en_speaker_9 is not in the model directory" in refused.value.message


def test_bark_repeats_itself_when_seeded_or_greedy(bark: BarkEngine) -> None:
    prompt = "the cat sat on the mat"
    first = seeded(bark, prompt, 7)
    assert np.array_equal(first, seeded(bark, prompt, 7))
    greedy = {"text_temp": 0.0, "waveform_temp": 0.0}
    assert np.array_equal(seeded(bark, prompt, 1, **greedy), seeded(bark, prompt, 2, **greedy))


def test_temperatures_reach_bark_as_the_seed_used_them(
    bark: BarkEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = bark._model
    calls: list[dict[str, Any]] = []

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return type(model).generate(model, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    speak(bark, "hello", text_temp=0.3, waveform_temp=1.2)
    speak(bark, "hello", text_temp=0.0, waveform_temp=0.0)
    sampled, greedy = calls
    assert (sampled["semantic_do_sample"], sampled["semantic_temperature"]) == (True, 0.3)
    assert (sampled["coarse_do_sample"], sampled["coarse_temperature"]) == (True, 1.2)
    assert sampled["fine_temperature"] == 0.5  # fixed, as in Suno's generate_audio
    assert sampled["semantic_max_new_tokens"] == 8  # the directory's generation config
    assert not greedy["semantic_do_sample"] and not greedy["coarse_do_sample"]
    assert "semantic_temperature" not in greedy and greedy["fine_temperature"] is None


def test_a_directory_cannot_ask_for_more_than_the_semantic_cap(
    bark_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "long-bark"
    shutil.copytree(bark_model, path)
    config = json.loads((path / "generation_config.json").read_text())
    config["semantic_config"]["max_new_tokens"] = 10 * MAX_SEMANTIC_TOKENS
    (path / "generation_config.json").write_text(json.dumps(config))
    engine = BarkEngine(EngineOptions(model=path))
    engine.load()
    kwargs = engine.sampling(TtsRequest(prompt="hello"))
    assert kwargs["semantic_max_new_tokens"] == MAX_SEMANTIC_TOKENS


def test_bark_without_speaker_embeddings_speaks_with_no_speaker_only(
    bark_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "voiceless-bark"
    shutil.copytree(bark_model, path)
    (path / "speaker_embeddings_path.json").unlink()
    engine = BarkEngine(EngineOptions(model=path))
    engine.load()
    assert engine.speakers == []
    assert speak(engine, "hello world")[0].sample_rate == 24_000
    with pytest.raises(BadInput) as refused:
        engine.run(TtsRequest(prompt="hello", speaker="en_male_1"))
    assert refused.value.code == "unknown_speaker"
    assert "send no speaker" in refused.value.message


def test_tiered_sends_short_text_to_bark_and_long_text_to_piper(
    tiered: TieredTtsEngine, bark_model: Path
) -> None:
    assert WORD_LIMIT == 20
    assert tiered.models == [bark_model.name, "piper-en_US-joe-medium"]
    assert tiered.speakers == ["en_US-joe-medium", "en_male_1", "v2/en_speaker_6"]
    for count, rate in [(5, 24_000), (WORD_LIMIT, 24_000), (WORD_LIMIT + 1, PIPER_RATE)]:
        assert speak(tiered, words(count))[0].sample_rate == rate
    long_text = "  ".join(words(30).split())  # words, not characters or spaces, count
    assert speak(tiered, long_text, speaker="en_male_1")[0].sample_rate == PIPER_RATE


def test_tiered_speaker_must_be_known_to_the_engine_chosen(tiered: TieredTtsEngine) -> None:
    assert speak(tiered, "hello", speaker="v2/en_speaker_6")[0].sample_rate == 24_000
    with pytest.raises(BadInput) as refused:  # piper has no Bark voices
        tiered.run(TtsRequest(prompt=words(30), speaker="v2/en_speaker_6"))
    assert refused.value.code == "unknown_speaker"
    with pytest.raises(BadInput) as refused:  # and Bark has no piper voices
        tiered.run(TtsRequest(prompt="hello", speaker="en_US-joe-medium"))
    assert refused.value.code == "unknown_speaker"


async def test_the_worker_serves_bark_with_the_seed_protocol(bark_model: Path) -> None:
    service = WorkerService("tts", pick("tts", None, EngineOptions(model=bark_model, threads=1)))
    await service.load()
    app = create_worker_app(service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as local:
        health = (await local.get("/health")).json()
        assert (health["status"], health["engine"]) == ("healthy", "bark+fallback")
        assert "en_male_1" in health["speakers"]
        body = {"prompt": "hello world", "speaker": "en_male_1", "text_temp": 0.7}
        answer = await local.post("/predict", json=body | {"waveform_temp": 0.7})
        assert answer.status_code == 200
        assert answer.json()["sample_rate"] == 24_000
        refused = await local.post("/predict", json={"prompt": "hello", "speaker": "klingon"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "unknown_speaker"
