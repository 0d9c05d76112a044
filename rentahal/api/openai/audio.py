"""`POST /v1/audio/transcriptions` (an `stt` query) and `POST /v1/audio/speech` (a `tts`
query)."""

from __future__ import annotations

import base64
import io
import wave
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ConfigDict, Field, StringConstraints

from rentahal.api.deps import BrokerDep
from rentahal.api.openai.auth import KeyDep
from rentahal.api.openai.errors import OpenAIError, OpenAIRoute, bad_request
from rentahal.api.openai.running import finished, media_target, query_spec, submit
from rentahal.core.options import Language, Speaker
from rentahal.core.validation import Storable

TRANSCRIPTION_LIMIT = 25 * 1024 * 1024  # bytes, as OpenAI's


router = APIRouter(route_class=OpenAIRoute)


def wav_seconds(data: str | None) -> float:
    """The length of the query's recording (a WAV after the broker's normalising)."""
    try:
        with wave.open(io.BytesIO(base64.b64decode(data or ""))) as recording:
            return round(recording.getnframes() / recording.getframerate(), 3)
    except (wave.Error, EOFError, ValueError, ZeroDivisionError):
        return 0.0


@router.post("/audio/transcriptions", response_model=None)
async def transcribe(
    principal: KeyDep,
    broker: BrokerDep,
    file: Annotated[UploadFile, File(description="The recording (WAV, MP3, WebM, Ogg…).")],
    model: Annotated[str, Form(max_length=128)] = "",
    language: Annotated[Language | None, Form()] = None,
    prompt: Annotated[str | None, Form(max_length=200_000, description="ignored")] = None,
    response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
) -> Response:
    """An `stt` query: the recording's text."""
    data = await file.read(TRANSCRIPTION_LIMIT + 1)
    if len(data) > TRANSCRIPTION_LIMIT:
        raise OpenAIError(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"Maximum content size limit ({TRANSCRIPTION_LIMIT}) exceeded",
            param="file",
            code="file_too_large",
        )
    if not data:
        raise bad_request("the file is empty", param="file")
    spec = query_spec(
        query_type="stt",
        model_name=media_target(broker, "stt", model),
        options={"language": language} if language else {},
    )
    # Set apart from validation: QuerySpec bounds base64 to what a WebSocket frame carries,
    # and an upload may be larger (the broker normalises it to a 16 kHz WAV at submit).
    spec = spec.model_copy(update={"audio": base64.b64encode(data).decode()})
    del data
    query = await submit(principal, broker, spec)
    done = await finished(broker, query)
    text = done.result or ""
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": language or "unknown",
                "duration": wav_seconds(done.audio),
                "text": text,
            }
        )
    return JSONResponse({"text": text})


class SpeechRequest(Storable):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(max_length=128)] = ""
    input: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]
    voice: Speaker | None = None
    response_format: Literal["wav", "mp3", "opus", "aac", "flac", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)  # ignored
    instructions: str | None = None  # ignored


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}},
)
async def speak(request: SpeechRequest, principal: KeyDep, broker: BrokerDep) -> Response:
    """A `tts` query: the text spoken, as a WAV file."""
    if request.response_format not in (None, "wav"):
        raise bad_request(
            f"only wav audio is made here, not {request.response_format}: "
            "ask for response_format=wav",
            param="response_format",
            code="unsupported_format",
        )
    spec = query_spec(
        prompt=request.input,
        query_type="tts",
        model_name=media_target(broker, "tts", request.model),
        options={"speaker": request.voice} if request.voice else {},
    )
    query = await submit(principal, broker, spec)
    done = await finished(broker, query)
    if not done.output:
        raise OpenAIError(502, "the worker made no audio", type="server_error", code="no_output")
    return Response(base64.b64decode(done.output), media_type="audio/wav")
