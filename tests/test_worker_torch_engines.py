"""The PyTorch engines (transformers chat and vision, diffusers) on tiny random models.

No registry package ships weights these engines could load offline, so the fixtures build
models of a few thousand random parameters, with real tokenizers and processors, and save
them as published model directories are saved; the engines load them as they would any.
Torch, transformers and diffusers are imported inside fixtures, so collecting the rest of
the suite does not pay for them.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from rentahal.worker.engines import BadInput, Engine, EngineOptions, EngineUnavailable, pick
from rentahal.worker.engines.diffusers_imagine import DiffusersEngine
from rentahal.worker.engines.transformers_chat import TransformersChatEngine, generate
from rentahal.worker.engines.transformers_vision import TransformersVisionEngine
from rentahal.worker.protocol import ChatRequest, ChatResponse, ImagineRequest, ImagineResponse

pytestmark = pytest.mark.offline_models

SENTENCES = ["hello world", "the cat sat on the mat", "a tiny model describes a red square"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)
VISION_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"
)
ENGINES: list[tuple[str, str, type[Engine]]] = [
    ("chat", "transformers", TransformersChatEngine),
    ("vision", "transformers", TransformersVisionEngine),
    ("imagine", "diffusers", DiffusersEngine),
]


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """Nothing here may reach a hub (the engines also pass `local_files_only`)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            patch.setenv(name, "1")
        yield


def png_base64(color: str = "red", size: tuple[int, int] = (40, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def byte_level_tokenizer(*special: str, **extra: Any) -> Any:
    """A byte-level BPE tokenizer trained on a few sentences: every string encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", *special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        **extra,
    )


def tiny_llama(tokenizer: Any, context: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama(tokenizer, context=128)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def plain_chat_model(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with no chat template, as base (not instruction-tuned) models come."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama-base"
    shutil.copytree(chat_model, path)
    (path / "chat_template.jinja").unlink()
    return path


@pytest.fixture(scope="module")
def llava_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vision-language model: a CLIP vision tower feeding a Llama, with its processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = tmp_path_factory.mktemp("models") / "tiny-llava"
    tokenizer = byte_level_tokenizer("<image>", extra_special_tokens={"image_token": "<image>"})
    LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VISION_TEMPLATE,
    ).save_pretrained(path)
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=tiny_llama(tokenizer, context=256),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def captioner_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A captioner: a ViT encoder and a GPT-2 decoder, an image processor and a tokenizer."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    path = tmp_path_factory.mktemp("models") / "tiny-captioner"
    tokenizer = byte_level_tokenizer()
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    encoder = ViTConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    VisionEncoderDecoderModel(config=config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def diffusion_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stable Diffusion pipeline with a CLIP tokenizer from a hand-written vocabulary."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("models")
    words = root / "clip-vocabulary"
    words.mkdir()
    alphabet = sorted(ByteLevel.alphabet())
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet), "ca", "cat</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (words / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (words / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    tokenizer = CLIPTokenizer.from_pretrained(words, model_max_length=16)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    path = root / "tiny-sd"
    pipeline: Any = StableDiffusionPipeline(  # mypy reads diffusers' dummy stand-in class
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    return path


def loaded(cls: type[Engine], model: Path) -> Engine:
    engine = cls(EngineOptions(model=model, threads=1))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def chat(chat_model: Path) -> Engine:
    return loaded(TransformersChatEngine, chat_model)


@pytest.fixture(scope="module", params=["llava", "captioner"])
def vision(request: pytest.FixtureRequest) -> Engine:
    return loaded(TransformersVisionEngine, request.getfixturevalue(f"{request.param}_model"))


@pytest.fixture(scope="module")
def imagine(diffusion_model: Path) -> Engine:
    return loaded(DiffusersEngine, diffusion_model)


@pytest.mark.parametrize(("role", "name", "cls"), ENGINES)
def test_available_only_with_a_model_path(role: str, name: str, cls: type[Engine]) -> None:
    assert cls.role == role and cls.name == name
    assert not cls.available(EngineOptions())
    assert cls.available(EngineOptions(model=Path("/models/any")))
    with pytest.raises(EngineUnavailable):
        pick(role, name, EngineOptions())


@pytest.mark.parametrize(
    ("role", "name", "cls", "model"),
    [
        ("chat", "transformers", TransformersChatEngine, "chat_model"),
        ("vision", "transformers", TransformersVisionEngine, "llava_model"),
        ("vision", None, TransformersVisionEngine, "llava_model"),  # preferred over OCR
        ("imagine", "diffusers", DiffusersEngine, "diffusion_model"),
        ("imagine", None, DiffusersEngine, "diffusion_model"),
    ],
)
def test_pick_returns_the_engine_for_a_model(
    role: str, name: str | None, cls: type[Engine], model: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(model)
    engine = pick(role, name, EngineOptions(model=path))
    assert type(engine) is cls
    engine.load()
    assert engine.models == [path.name]


@pytest.mark.parametrize(("role", "name", "cls"), ENGINES)
def test_load_refuses_a_missing_directory(
    role: str, name: str, cls: type[Engine], tmp_path: Path
) -> None:
    with pytest.raises(EngineUnavailable, match="does not exist"):
        cls(EngineOptions(model=tmp_path / "nowhere")).load()


def test_imagine_refuses_a_directory_that_is_not_a_pipeline(chat_model: Path) -> None:
    with pytest.raises(EngineUnavailable, match="not a diffusers pipeline"):
        DiffusersEngine(EngineOptions(model=chat_model)).load()


def test_chat_answers_in_the_models_chat_format(
    chat: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = chat._tokenizer  # type: ignore[attr-defined]
    conversations: list[Any] = []

    def recording(conversation: Any, **kwargs: Any) -> Any:
        conversations.append(conversation)
        return type(tokenizer).apply_chat_template(tokenizer, conversation, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", recording)
    answer = chat.run(ChatRequest(prompt="hello world", options={"max_tokens": 8}))
    assert isinstance(answer, ChatResponse) and isinstance(answer.response, str)
    assert conversations == [[{"role": "user", "content": "hello world"}]]


def test_chat_without_a_template_reads_the_plain_prompt(plain_chat_model: Path) -> None:
    engine = loaded(TransformersChatEngine, plain_chat_model)
    assert not engine._tokenizer.chat_template  # type: ignore[attr-defined]
    answer = engine.run(ChatRequest(prompt="the cat", options={"max_tokens": 8}))
    assert isinstance(answer, ChatResponse) and isinstance(answer.response, str)


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 1.5, "seed": 7}])
def test_chat_repeats_itself_when_greedy_or_seeded(chat: Engine, options: dict[str, Any]) -> None:
    request = ChatRequest(prompt="the cat sat", options={"max_tokens": 12, **options})
    assert chat.run(request) == chat.run(request)


def test_max_tokens_bounds_the_answer(chat: Engine) -> None:
    model, tokenizer = chat._model, chat._tokenizer  # type: ignore[attr-defined]
    inputs = tokenizer("hello world", return_tensors="pt")
    short = generate(model, inputs, {"max_tokens": 3, "temperature": 0})
    longer = generate(model, inputs, {"max_tokens": 9, "temperature": 0})
    assert len(short) <= 3 and len(longer) <= 9
    assert longer[: len(short)] == short  # greedy: the short answer is the long one, cut


def test_chat_refuses_images_and_overlong_prompts(chat: Engine) -> None:
    with pytest.raises(BadInput) as refused:
        chat.run(ChatRequest(prompt="what is this?", image=png_base64()))
    assert refused.value.code == "unsupported"
    with pytest.raises(BadInput) as refused:
        chat.run(ChatRequest(prompt="the cat sat on the mat " * 40))
    assert refused.value.code == "prompt_too_long"


def test_vision_describes_an_image(vision: Engine) -> None:
    answer = vision.run(
        ChatRequest(prompt="what is this?", image=png_base64(), options={"max_tokens": 8})
    )
    assert isinstance(answer, ChatResponse) and isinstance(answer.response, str)


def test_vision_needs_a_decodable_image(vision: Engine) -> None:
    with pytest.raises(BadInput) as refused:
        vision.run(ChatRequest(prompt="what is this?"))
    assert refused.value.code == "missing_image"
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a picture").decode()
    with pytest.raises(BadInput) as refused:
        vision.run(ChatRequest(prompt="what is this?", image=corrupt))
    assert refused.value.code == "bad_image"


def test_vision_language_models_read_the_prompt(llava_model: Path, captioner_model: Path) -> None:
    """The prompt reaches a VLM (and can be too long for it); a captioner ignores it."""
    long_prompt = ChatRequest(
        prompt="describe the red square " * 60, image=png_base64(), options={"max_tokens": 4}
    )
    with pytest.raises(BadInput) as refused:
        loaded(TransformersVisionEngine, llava_model).run(long_prompt)
    assert refused.value.code == "prompt_too_long"
    answer = loaded(TransformersVisionEngine, captioner_model).run(long_prompt)
    assert isinstance(answer, ChatResponse)


def draw(engine: Engine, request: ImagineRequest) -> ImagineResponse:
    answer = engine.run(request)
    assert isinstance(answer, ImagineResponse)
    return answer


def decoded_png(answer: ImagineResponse) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(answer.image_base64, validate=True)))
    assert image.format == "PNG"
    return image


def test_imagine_draws_the_requested_size_reproducibly(imagine: Engine) -> None:
    request = ImagineRequest(
        prompt="a cat", negative_prompt="a dog", steps=2, width=64, height=72, seed=42
    )
    first, second = draw(imagine, request), draw(imagine, request)
    assert (first.width, first.height, first.seed) == (64, 72, 42)
    assert decoded_png(first).size == (64, 72)
    assert first.image_base64 == second.image_base64
    other = draw(imagine, request.model_copy(update={"seed": 43}))
    assert decoded_png(other).size == (64, 72)
    assert other.image_base64 != first.image_base64


def test_imagine_reports_the_random_seed_it_chose(imagine: Engine) -> None:
    request = ImagineRequest(prompt="a cat", steps=1, width=64, height=64, seed=-1)
    answer = draw(imagine, request)
    assert 0 <= answer.seed < 2**32
    again = draw(imagine, request.model_copy(update={"seed": answer.seed}))
    assert again.image_base64 == answer.image_base64


def test_imagine_loads_a_pipeline_whose_safety_checker_was_deleted(
    diffusion_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sd-without-checker"
    shutil.copytree(diffusion_model, path)
    index = json.loads((path / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (path / "model_index.json").write_text(json.dumps(index))
    engine = loaded(DiffusersEngine, path)
    answer = draw(engine, ImagineRequest(prompt="a cat", steps=1, width=64, height=64, seed=1))
    assert decoded_png(answer).size == (64, 64)
