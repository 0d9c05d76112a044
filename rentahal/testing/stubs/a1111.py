"""Stub of the Stable Diffusion web UI API (AUTOMATIC1111 v1.10, launched with ``--api``).

Follows the web UI's ``modules/api`` (api.py, models.py) and ``modules/processing.py``:

- ``POST /sdapi/v1/txt2img`` → ``{images: [base64 PNG], parameters: {the request with every
  field's default}, info: "<JSON string of the processing result>"}``. The pictures are real
  PNGs made with Pillow (a gradient whose colours come from the seed, so a seed always gives
  the same picture) of the requested size rounded down to a multiple of 8, carrying the
  web UI's ``parameters`` text chunk; seed -1 means a random seed, reported in ``info``;
  ``batch_size × n_iter`` pictures come after a grid of them, as ``index_of_first_image``
  says; ``send_images: false`` answers no images.
- ``override_settings.sd_model_checkpoint`` picks a checkpoint by any of the web UI's aliases
  (title, file name, model name, hashes); an unknown one is ignored, as the web UI does, and
  ``override_settings_restore_afterwards: false`` leaves the picked one loaded.
- ``GET /sdapi/v1/options`` (a dict of settings, ``sd_model_checkpoint`` the loaded title),
  ``GET /sdapi/v1/sd-models`` (``[{title, model_name, hash, sha256, filename, config}]``, one
  per ``behaviour.models`` entry, taken as file names under ``models/Stable-diffusion``) and
  ``GET /internal/ping`` (``{}``) answer with the health behaviour.
- A body the request model refuses is a 422 in FastAPI's (pydantic 1) shape
  ``{"detail": [{loc, msg, type}]}``; every other error is the web UI's envelope
  ``{"error", "detail", "body", "errors"}``.
- With an API key the ``/sdapi`` routes (not ``/internal/ping``) need it. ``--api-auth
  user:password`` in the web UI is HTTP Basic only, so a key containing ``:`` must come as
  ``Basic``; any other key must come as ``Bearer``, as a token-checking proxy in front of the
  web UI would demand. A wrong or missing one is a 401 with ``WWW-Authenticate: Basic``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import posixpath
import random
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image, PngImagePlugin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rentahal.testing.stubs.base import build_app, pause, probe_failure, reason_phrase
from rentahal.testing.stubs.state import StubState

WEBUI_VERSION = "v1.10.1"
MODELS_DIR = "/stable-diffusion-webui/models/Stable-diffusion"
MAX_PIXELS = 16 * 1024 * 1024  # beyond this, in all pictures of a request: "out of memory"

# StableDiffusionTxt2ImgProcessingAPI: field → (pydantic 1 type, default). Every field is
# Optional (null here means the default); fields not listed are ignored, as pydantic 1 does.
_FIELDS: dict[str, tuple[str, Any]] = {
    "prompt": ("str", ""),
    "negative_prompt": ("str", ""),
    "styles": ("list", None),
    "seed": ("int", -1),
    "subseed": ("int", -1),
    "subseed_strength": ("float", 0.0),
    "seed_resize_from_h": ("int", -1),
    "seed_resize_from_w": ("int", -1),
    "sampler_name": ("str", None),
    "scheduler": ("str", None),
    "batch_size": ("int", 1),
    "n_iter": ("int", 1),
    "steps": ("int", 50),
    "cfg_scale": ("float", 7.0),
    "width": ("int", 512),
    "height": ("int", 512),
    "restore_faces": ("bool", None),
    "tiling": ("bool", None),
    "do_not_save_samples": ("bool", False),
    "do_not_save_grid": ("bool", False),
    "eta": ("float", None),
    "denoising_strength": ("float", None),
    "s_min_uncond": ("float", None),
    "s_churn": ("float", None),
    "s_tmax": ("float", None),
    "s_tmin": ("float", None),
    "s_noise": ("float", None),
    "override_settings": ("dict", None),
    "override_settings_restore_afterwards": ("bool", True),
    "refiner_checkpoint": ("str", None),
    "refiner_switch_at": ("float", None),
    "disable_extra_networks": ("bool", False),
    "firstpass_image": ("str", None),
    "comments": ("dict", None),
    "enable_hr": ("bool", False),
    "firstphase_width": ("int", 0),
    "firstphase_height": ("int", 0),
    "hr_scale": ("float", 2.0),
    "hr_upscaler": ("str", None),
    "hr_second_pass_steps": ("int", 0),
    "hr_resize_x": ("int", 0),
    "hr_resize_y": ("int", 0),
    "hr_checkpoint_name": ("str", None),
    "hr_sampler_name": ("str", None),
    "hr_scheduler": ("str", None),
    "hr_prompt": ("str", ""),
    "hr_negative_prompt": ("str", ""),
    "force_task_id": ("str", None),
    "sampler_index": ("str", "Euler"),
    "script_name": ("str", None),
    "script_args": ("list", []),
    "send_images": ("bool", True),
    "save_images": ("bool", False),
    "alwayson_scripts": ("dict", {}),
    "infotext": ("str", None),
}
_TYPE_ERRORS = {
    "str": ("str type expected", "type_error.str"),
    "int": ("value is not a valid integer", "type_error.integer"),
    "float": ("value is not a valid float", "type_error.float"),
    "bool": ("value could not be parsed to a boolean", "type_error.bool"),
    "dict": ("value is not a valid dict", "type_error.dict"),
    "list": ("value is not a valid list", "type_error.list"),
}
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}

# v1.10's samplers (the first is the fallback for an unknown name) and schedule types; a
# sampler name may end with a schedule type, as names before v1.9 did ("DPM++ 2M Karras").
SAMPLERS = (
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
)
SCHEDULES = (
    "Automatic",
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
)


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request body")
        self.errors = errors


@dataclass(frozen=True)
class Checkpoint:
    """One model file, with the names the web UI knows it by (``sd_models.CheckpointInfo``)."""

    name: str  # path under the models directory, e.g. "v1-5-pruned.ckpt"

    @classmethod
    def of(cls, entry: str) -> Checkpoint:
        name = entry.strip().lstrip("/")
        return cls(name if posixpath.splitext(name)[1] else f"{name}.safetensors")

    @property
    def model_name(self) -> str:
        return posixpath.splitext(self.name.replace("\\", "_").replace("/", "_"))[0]

    @property
    def name_for_extra(self) -> str:
        return posixpath.splitext(posixpath.basename(self.name))[0]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    @property
    def legacy_hash(self) -> str:
        return hashlib.sha256(b"legacy:" + self.name.encode()).hexdigest()[:8]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]"

    @property
    def aliases(self) -> set[str]:
        extra = self.name_for_extra
        return {
            self.legacy_hash,
            self.model_name,
            self.title,
            self.name,
            extra,
            f"{self.name} [{self.legacy_hash}]",
            self.shorthash,
            self.sha256,
            f"{extra} [{self.shorthash}]",
        }

    def listing(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "model_name": self.model_name,
            "hash": self.shorthash,
            "sha256": self.sha256,
            "filename": f"{MODELS_DIR}/{self.name}",
            "config": None,
        }


def create_app(state: StubState) -> Starlette:
    """Build the web UI API app around ``state``."""
    loaded: dict[str, str | None] = {"title": None}  # the checkpoint in memory

    def checkpoints() -> list[Checkpoint]:
        return [Checkpoint.of(name) for name in state.behaviour.models if name.strip()]

    def current() -> Checkpoint | None:
        listed = checkpoints()
        chosen = next((c for c in listed if c.title == loaded["title"]), None)
        return chosen or (listed[0] if listed else None)

    async def probed(request: Request, *, protected: bool = True) -> Response | None:
        if protected and (refused := _check_auth(request, state.api_key)) is not None:
            return refused
        failure = await probe_failure(request, state)
        if failure is not None:
            return _http_error(failure, reason_phrase(failure))
        return None

    async def options(request: Request) -> Response:
        if (refused := await probed(request)) is not None:
            return refused
        checkpoint = current()
        return JSONResponse(_options(checkpoint))

    async def sd_models(request: Request) -> Response:
        if (refused := await probed(request)) is not None:
            return refused
        return JSONResponse([c.listing() for c in checkpoints()])

    async def ping(request: Request) -> Response:
        if (refused := await probed(request, protected=False)) is not None:
            return refused
        return JSONResponse({})

    async def txt2img(request: Request) -> Response:
        if (refused := _check_auth(request, state.api_key)) is not None:
            return refused
        try:
            params = _validated(await request.body())
        except _Invalid as invalid:
            return JSONResponse({"detail": invalid.errors}, status_code=422)
        await pause(request, state.behaviour.latency)
        failure = state.take_failure()
        if failure is not None:
            return _configured_failure(failure)

        checkpoint = current()
        wanted = (params["override_settings"] or {}).get("sd_model_checkpoint")
        if isinstance(wanted, str):
            named = next((c for c in checkpoints() if wanted in c.aliases), None)
            if named is not None:
                checkpoint = named
                if params["override_settings_restore_afterwards"] is False:
                    loaded["title"] = named.title
        if checkpoint is None:
            return _api_error(500, "RuntimeError", "", "No checkpoints found")
        width, height = (params["width"] // 8) * 8, (params["height"] // 8) * 8
        count = params["batch_size"] * params["n_iter"]
        if width < 8 or height < 8 or count < 1:
            return _api_error(500, "RuntimeError", "", "nothing to generate at that size")
        if width * height * count > MAX_PIXELS:
            return _api_error(
                500,
                "OutOfMemoryError",
                "",
                "CUDA out of memory. Tried to allocate "
                f"{width * height * count * 12 // 2**20} MiB (stub limit)",
            )
        seed = params["seed"]
        if seed == -1:
            seed = random.randrange(4294967294)
        sampler, schedule = _sampler_and_schedule(params)
        info = _processed(params, checkpoint, seed, sampler, schedule, width, height, count)
        images: list[str] = []
        if params["send_images"]:
            images = await asyncio.to_thread(
                _pictures, info["all_seeds"], width, height, info["infotexts"], count
            )
        return JSONResponse({"images": images, "parameters": params, "info": json.dumps(info)})

    return build_app(
        state,
        [
            Route("/sdapi/v1/txt2img", txt2img, methods=["POST"]),
            Route("/sdapi/v1/options", options, methods=["GET"]),
            Route("/sdapi/v1/sd-models", sd_models, methods=["GET"]),
            Route("/internal/ping", ping, methods=["GET"]),
        ],
    )


def _options(checkpoint: Checkpoint | None) -> dict[str, Any]:
    """Some of the settings `GET /sdapi/v1/options` lists (the real one has hundreds)."""
    return {
        "samples_save": True,
        "samples_format": "png",
        "grid_save": True,
        "grid_format": "png",
        "return_grid": True,
        "enable_pnginfo": True,
        "outdir_txt2img_samples": "outputs/txt2img-images",
        "sd_model_checkpoint": checkpoint.title if checkpoint else None,
        "sd_checkpoint_hash": checkpoint.sha256 if checkpoint else None,
        "sd_checkpoints_limit": 1,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "eta_noise_seed_delta": 0,
        "show_progress_every_n_steps": 10,
    }


def _validated(body: bytes) -> dict[str, Any]:
    """The request model with defaults, coerced the way pydantic 1 does, or `_Invalid`."""
    if not body:
        raise _Invalid([{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}])
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise _Invalid(
            [{"loc": ["body", 0], "msg": str(exc), "type": "value_error.jsondecode"}]
        ) from None
    if not isinstance(payload, dict):
        message, kind = _TYPE_ERRORS["dict"]
        raise _Invalid([{"loc": ["body"], "msg": message, "type": kind}])
    params: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, (kind, default) in _FIELDS.items():
        value = payload.get(name)
        if value is None:
            params[name] = default
            continue
        try:
            params[name] = _coerce(kind, value)
        except (TypeError, ValueError, OverflowError):
            message, error_type = _TYPE_ERRORS[kind]
            errors.append({"loc": ["body", name], "msg": message, "type": error_type})
    if errors:
        raise _Invalid(errors)
    return params


def _coerce(kind: str, value: Any) -> Any:
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return str(value)
        raise TypeError
    if kind == "int":
        if isinstance(value, dict | list):
            raise TypeError
        return int(value)
    if kind == "float":
        if isinstance(value, dict | list):
            raise TypeError
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise TypeError
    if kind == "dict":
        if isinstance(value, dict):
            return value
        raise TypeError
    if isinstance(value, list):
        return value
    raise TypeError


def _sampler_and_schedule(params: dict[str, Any]) -> tuple[str, str]:
    """`sd_samplers.get_sampler_and_scheduler`: a trailing schedule type is split off, and an
    unknown sampler falls back to the first one."""
    name = params["sampler_name"] or params["sampler_index"] or SAMPLERS[0]
    schedule = params["scheduler"] if params["scheduler"] in SCHEDULES else "Automatic"
    for label in SCHEDULES:
        if name.endswith(f" {label}"):
            name, schedule = name[: -len(label) - 1], label
            break
    return (name if name in SAMPLERS else SAMPLERS[0]), schedule


def _processed(
    params: dict[str, Any],
    checkpoint: Checkpoint,
    seed: int,
    sampler: str,
    schedule: str,
    width: int,
    height: int,
    count: int,
) -> dict[str, Any]:
    """What `Processed.js()` reports, as a dict (the answer sends it as a JSON string)."""
    seeds = [seed + i for i in range(count)]
    prompt, negative = params["prompt"], params["negative_prompt"]

    def infotext(picture_seed: int) -> str:
        settings = (
            f"Steps: {params['steps']}, Sampler: {sampler}, Schedule type: {schedule}, "
            f"CFG scale: {params['cfg_scale']:g}, Seed: {picture_seed}, "
            f"Size: {width}x{height}, Model hash: {checkpoint.shorthash}, "
            f"Model: {checkpoint.name_for_extra}, Version: {WEBUI_VERSION}"
        )
        lines = [prompt, *([f"Negative prompt: {negative}"] if negative else []), settings]
        return "\n".join(lines)

    return {
        "prompt": prompt,
        "all_prompts": [prompt] * count,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * count,
        "seed": seed,
        "all_seeds": seeds,
        "subseed": params["subseed"] if params["subseed"] != -1 else seed + 1,
        "all_subseeds": [seed + 1 + i for i in range(count)],
        "subseed_strength": params["subseed_strength"],
        "width": width,
        "height": height,
        "sampler_name": sampler,
        "cfg_scale": params["cfg_scale"],
        "steps": params["steps"],
        "batch_size": params["batch_size"],
        "restore_faces": bool(params["restore_faces"]),
        "face_restoration_model": None,
        "sd_model_name": checkpoint.name_for_extra,
        "sd_model_hash": checkpoint.shorthash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": params["seed_resize_from_w"],
        "seed_resize_from_h": params["seed_resize_from_h"],
        "denoising_strength": params["denoising_strength"],
        "extra_generation_params": {"Schedule type": schedule},
        "index_of_first_image": 1 if count > 1 else 0,
        "infotexts": [infotext(s) for s in seeds],
        "styles": params["styles"] or [],
        "job_timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": WEBUI_VERSION,
    }


def picture(seed: int, width: int, height: int) -> Image.Image:
    """The stub's "generation": a vertical gradient between two colours taken from the seed."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    size = (width, height)
    top, bottom = (
        Image.new("RGB", size, tuple(digest[0:3])),
        Image.new("RGB", size, tuple(digest[3:6])),
    )
    return Image.composite(bottom, top, Image.linear_gradient("L").resize(size))


def _png(image: Image.Image, infotext: str | None) -> str:
    metadata = None
    if infotext is not None:
        metadata = PngImagePlugin.PngInfo()
        metadata.add_text("parameters", infotext)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=metadata)
    return base64.b64encode(out.getvalue()).decode()


def _pictures(
    seeds: list[int], width: int, height: int, infotexts: list[str], count: int
) -> list[str]:
    """The answer's images: a grid first when there are several (`return_grid`), then each."""
    pictures = [picture(seed, width, height) for seed in seeds]
    encoded = [_png(p, text) for p, text in zip(pictures, infotexts, strict=True)]
    if count == 1:
        return encoded
    rows = min(max(round(math.sqrt(count)), 1), count)
    cols = math.ceil(count / rows)
    grid = Image.new("RGB", (cols * width, rows * height), "black")
    for index, p in enumerate(pictures):
        grid.paste(p, ((index % cols) * width, (index // cols) * height))
    return [_png(grid, infotexts[0]), *encoded]


def _check_auth(request: Request, api_key: str | None) -> Response | None:
    """`--api-auth` (HTTP Basic `user:password`), or a Bearer token for any other key."""
    if api_key is None:
        return None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if ":" in api_key:
        if scheme.lower() != "basic" or not credentials:
            return _unauthorized("Not authenticated")
        try:
            given = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, ValueError):
            return _unauthorized("Invalid authentication credentials")
    else:
        if scheme.lower() != "bearer" or not credentials:
            return _unauthorized("Not authenticated")
        given = credentials
    if not secrets.compare_digest(given.encode(), api_key.encode()):
        return _unauthorized("Incorrect username or password")
    return None


def _unauthorized(detail: str) -> Response:
    response = _http_error(401, detail)
    response.headers["WWW-Authenticate"] = "Basic"
    return response


def _configured_failure(status: int) -> Response:
    if status == 422:
        error = {
            "loc": ["body", "prompt"],
            "msg": "stub configured to refuse",
            "type": "value_error",
        }
        return JSONResponse({"detail": [error]}, status_code=422)
    if status >= 500:
        return _api_error(
            status, "OutOfMemoryError", "", "CUDA out of memory (stub configured to fail)"
        )
    return _http_error(status, reason_phrase(status))


def _http_error(status: int, detail: str) -> Response:
    """An `HTTPException` as the web UI's exception handler reports it."""
    return _api_error(status, "HTTPException", detail, f"{status}: {detail}")


def _api_error(status: int, error: str, detail: str, errors: str) -> Response:
    """The web UI's error envelope (`api_middleware.handle_exception`)."""
    body = {"error": error, "detail": detail, "body": "", "errors": errors}
    return JSONResponse(body, status_code=status)
