"""The intents that are queries: chat, vision and imagine queue a query as the user, which
then runs like any other (fair queue, routing, accounting, streamed events)."""

from __future__ import annotations

from typing import ClassVar

from rentahal.core.errors import ErrorCode
from rentahal.core.specs import QuerySpec
from rentahal.core.vocabulary import QueryType
from rentahal.intents.base import Intent, IntentCall, IntentError, IntentOutcome

DESCRIBE_PROMPT = "Describe this image in detail."


class ChatIntent(Intent):
    name = "chat"
    triggers: ClassVar[tuple[str, ...]] = ("chat", "ask")
    description = "talk with a language model: questions, explanations, writing"

    async def handle(self, call: IntentCall) -> IntentOutcome:
        options = {"speak": True} if call.speak else {}
        return await call.submit(
            QuerySpec(prompt=call.text, query_type=QueryType.CHAT, options=options)
        )


class VisionIntent(Intent):
    name = "vision"
    triggers: ClassVar[tuple[str, ...]] = ("vision", "look")
    keywords: ClassVar[tuple[str, ...]] = (
        "what do you see",
        "take a picture",
        "describe this image",
        "look at this",
    )
    description = "look at a picture or the camera and describe it or answer about it"

    async def handle(self, call: IntentCall) -> IntentOutcome:
        if call.image is None:
            raise IntentError(
                ErrorCode.INVALID, "Vision needs a picture: upload one or allow the camera."
            )
        prompt = call.text if call.text and call.text != call.utterance else DESCRIBE_PROMPT
        options = {"speak": True} if call.speak else {}
        return await call.submit(
            QuerySpec(prompt=prompt, query_type=QueryType.VISION, image=call.image, options=options)
        )


class ImagineIntent(Intent):
    name = "imagine"
    triggers: ClassVar[tuple[str, ...]] = ("imagine", "draw", "paint")
    keywords: ClassVar[tuple[str, ...]] = ("draw me", "picture of", "image of", "paint me")
    description = "make a picture from a description"

    async def handle(self, call: IntentCall) -> IntentOutcome:
        if not call.text:
            raise IntentError(ErrorCode.INVALID, "Say what to imagine, for example: a red fox.")
        return await call.submit(QuerySpec(prompt=call.text, query_type=QueryType.IMAGINE))
