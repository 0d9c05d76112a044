"""OpenAI's chat completion request, and the query it makes: one prompt for the
conversation, a `vision` query for an image part, the options workers honour."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rentahal.api.openai.errors import bad_request
from rentahal.api.openai.running import query_spec, target
from rentahal.core.options import MaxTokens, Seed, Temperature, TopP
from rentahal.core.specs import QuerySpec
from rentahal.core.validation import Storable

MAX_MESSAGES = 512
MAX_TEXT_CHARS = 400_000  # all the text parts of a request together
MAX_IMAGES = 4
DESCRIBE = "Describe this image in detail"  # the prompt of an image sent without text
ROLE_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}

Text = Annotated[str, StringConstraints(max_length=200_000)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ImageURL(BaseModel):
    url: Annotated[str, StringConstraints(max_length=16 * 1024 * 1024 + 64)]
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] | None = Field(default=None, max_length=64)
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> list[ImageURL]:
        if self.content is None or isinstance(self.content, str):
            return []
        return [part.image_url for part in self.content if isinstance(part, ImagePart)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(Storable):
    """OpenAI's chat completion request, as much of it as a realm can honour."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(max_length=128)] = ""
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # The bounds of a query's options (`QueryOptions`), as the bus and REST hold them.
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    seed: Seed | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ChatRequest:
        if sum(len(m.text()) for m in self.messages) > MAX_TEXT_CHARS:
            raise ValueError(f"the messages' text is over {MAX_TEXT_CHARS} characters")
        if sum(len(m.images()) for m in self.messages) > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} images per request")
        return self


def render_prompt(messages: list[ChatMessage]) -> str:
    """One prompt for the conversation (workers take a single prompt): a lone user message
    as it is, otherwise one `Role: text` line per turn, ending with the user's last."""
    last = messages[-1]
    if len(messages) == 1:
        return last.text() or (DESCRIBE if last.images() else "")
    turns = []
    for message in messages:
        text = message.text() or (DESCRIBE if message is last and message.images() else "")
        if text:
            turns.append(f"{ROLE_LABELS[message.role]}: {text}")
    return "\n".join(turns)


def image_data(image: ImageURL, param: str) -> str:
    """The base64 of a `data:image/…;base64,…` URL; the broker fetches no remote images."""
    header, comma, data = image.url.partition(",")
    if not comma or not header.startswith("data:"):
        raise bad_request(
            "only data: URLs are accepted (data:image/...;base64,...): the broker fetches "
            "nothing from the network",
            param=param,
            code="invalid_image_url",
        )
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise bad_request(
            "an image URL must be data:image/<type>;base64,<data>",
            param=param,
            code="invalid_image_url",
        )
    return data


def chat_query(request: ChatRequest) -> QuerySpec:
    """The query a chat completion request makes; a refusal for what no worker honours."""
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    if request.stop:
        raise bad_request("stop sequences are not supported by this broker", param="stop")
    if request.tools or request.functions:
        raise bad_request("tools and functions are not supported by this broker", param="tools")
    if request.messages[-1].role != "user":
        raise bad_request("the last message must be the user's", param="messages")
    image = None
    for index, message in enumerate(request.messages):
        for part, content in enumerate(message.content or ()):
            if isinstance(content, ImagePart):
                where = f"messages.{index}.content.{part}.image_url.url"
                image = image_data(content.image_url, where)
    prompt = render_prompt(request.messages)
    options: dict[str, Any] = {"stream": bool(request.stream)}
    limit = request.max_completion_tokens or request.max_tokens
    for name, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("max_tokens", limit),
        ("seed", request.seed),
    ):
        if value is not None:
            options[name] = value
    return query_spec(
        "messages",
        prompt=prompt,
        query_type="vision" if image else "chat",
        model_name=target(request.model),
        image=image,
        options=options,
    )
