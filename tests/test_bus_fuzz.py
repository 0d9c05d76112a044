"""Generated attacks on the bus (`/ws`, SPEC §3 and §15): every inbound message type, valid
and hostile, from a guest and from the sysop, against a real broker process.

What is generated. The message types are read from the `InboundMessage` union itself
(`MESSAGE_TYPES`), and each type's strategy is derived from its pydantic model's JSON schema
(`model_json_schema()`), so a type added to the union is fuzzed without a change here — and
`test_every_message_type_has_a_strategy` fails if a schema uses a construct this derivation does
not understand. For each type there are

- valid-shaped messages: what the schema describes (alias spellings included), with a few
  fields steered to values that mean something in this realm (`field_values`: real user
  ids, real media, worker addresses that fail fast);
- hostile messages: a valid one, then one to three mutations — a field dropped, an extra
  field, a field replaced by a wrong type, a huge string or number, deep nesting, unicode
  control/NUL/lone-surrogate text, SQL/HTML/script/path-traversal strings, negative and
  overflowing integers, NaN; another message's `type`; a hostile `id`;

and, for all types together, frames that are not messages at all: non-object JSON, invalid
JSON, random binary frames, messages in UTF-16/32 or Latin-1, frames around the 1 MiB limit
(text and binary, counted in bytes). Past the WebSocket layer's own limit (uvicorn's
`ws_max_size`, 16 MiB) there is no reply to check: such a frame closes its connection with 1009,
which a test of its own pins, along with the broker carrying on.

The oracle. The broker's own parser (`parse_message`) run here on the same frame says what the
broker must answer: a `ProtocolError` ⇒ an `error` with that code and that `response_to`; a
valid message ⇒ a direct reply carrying `response_to` when it had an `id` (`pong` has no reply);
a valid sysop message from a guest ⇒ `error forbidden`. For every example, besides: no `error`
of code `internal`, the connection still answers a `ping`, and the broker's output shows no
`Traceback` and no `ws.handler_failed` (its whole output is scanned, `WatchedBroker`).

How it runs. One broker process for the module (a module-scoped fixture: no example starts a
broker), one connection per role kept open across examples (reopened only if a bug closed it,
so a shrinking run can continue). The tests are `async def` + `@given`: pytest-asyncio runs a
Hypothesis test's inner function on the test's event loop (its `AsyncHypothesisTest` item
synchronizes `hypothesis.inner_test`), so each example is one `run_until_complete` on the
session loop that owns the fixture's broker and WebSockets — Hypothesis keeps generation,
shrinking and its example database, and nothing crosses threads. Strategies that need
run-time facts (the users' ids) are drawn inside the test with `st.data()`.

Side effects are real and bounded: the sysop adds workers at 127.0.0.1:9 (refused at once),
pools, Hugging Face models, bans and unbans a throw-away "victim" user, broadcasts; queries are
small and time out within seconds. Nothing targets the guest or the sysop whose connections the
run uses, except the sysop acting on itself: a self-ban and demoting the last sysop are
refused by the broker, and terminating its own queries is harmless.

The default run is sized for the suite (8 examples per type, role and shape; well under a
minute) and derandomized: the same examples every run. `RENTAHAL_TEST_FUZZ=deep` makes them
random and ten times as many (`FUZZ_SCALE=N` sets the multiplier; tests/conftest.py).

Known bugs (`KNOWN_BUGS`) are kept out of the fuzzing with `assume`, and each has its own
reproduction below marked `xfail(strict=True)`: when a fix lands, that test XPASSes and fails,
so the mark and the `KNOWN_BUGS` entry go together. Bugs already fixed keep their
reproductions as plain regression tests (`FIXED`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import AliasChoices, BaseModel
from websockets.exceptions import ConnectionClosed

from rentahal.bus.messages import MESSAGE_TYPES, InboundMessage, parse_message
from rentahal.core.errors import ProtocolError
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.waiting import eventually
from tests.conftest import FUZZ_SCALE, create_sysop
from tests.media import make_wav

LIMIT = 1_048_576  # the broker's default max_message_size, in bytes
# uvicorn's ws_max_size as `rentahal serve` sets it: a bigger frame is closed with 1009 by the
# WebSocket layer, before the broker sees it.
TRANSPORT_LIMIT = max(16 * 1024 * 1024, 4 * LIMIT)
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens, connections are refused at once
OUTSIDE_ENDPOINTS = {
    # No fuzzed message may make the broker call the outside world.
    "RENTAHAL_HUGGINGFACE_ENDPOINT": CLOSED_PORT,
    "RENTAHAL_CLAUDE_ENDPOINT": CLOSED_PORT,
    "RENTAHAL_OPENWEATHERMAP_ENDPOINT": CLOSED_PORT,
    "RENTAHAL_GOOGLE_AUTH_ENDPOINT": f"{CLOSED_PORT}/o/oauth2/v2/auth",
    "RENTAHAL_GOOGLE_TOKEN_ENDPOINT": f"{CLOSED_PORT}/token",
    "RENTAHAL_GOOGLE_REVOKE_ENDPOINT": f"{CLOSED_PORT}/revoke",
    "RENTAHAL_GMAIL_API_ENDPOINT": CLOSED_PORT,
}
BROKER_ENV = {
    **OUTSIDE_ENDPOINTS,
    # An accepted query ends within seconds; the intent router asks a model for 0.5 s at most.
    "RENTAHAL_QUEUE_TIMEOUT": "2",
    "RENTAHAL_QUERY_TIMEOUT": "2",
    "RENTAHAL_MAX_ATTEMPTS": "1",
    "RENTAHAL_INTENT_ROUTER_TIMEOUT": "0.5",
    # `settled` finds its mark in the access log, which is off by default.
    "RENTAHAL_ACCESS_LOG": "true",
}
REPLY_WITHIN = 15.0  # seconds; an add_worker probe or an intent classification is the slowest

# A line of broker output that means an input reached a path nobody handled.
ALARMS = re.compile(rb"Traceback|ws\.handler_failed|Exception in ASGI application")
MARK = re.compile(rb"/healthz\?mark=([0-9a-f]{32})")


# --- the broker, watched -----------------------------------------------------------------


class WatchedBroker(BrokerProcess):
    """A broker process whose whole output is scanned for `ALARMS` as it is read — `output`
    keeps only the last 256 KiB."""

    def __init__(self, data_dir: Path, *, env: dict[str, str]) -> None:
        super().__init__(data_dir, env=env)
        self.alarms: list[str] = []
        self._marks: set[str] = set()
        self._line = b""

    async def settled(self) -> None:
        """Wait until all the broker logged before now has been read: request a page with a
        fresh mark and wait for the mark in its access-log line (the broker logs in order)."""
        mark = uuid.uuid4().hex
        async with httpx.AsyncClient(base_url=self.url) as http:
            await http.get("/healthz", params={"mark": mark})

        async def seen() -> bool:
            return mark in self._marks

        await eventually(seen, within=10, every=0.001)

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        await super()._collect(_Tee(stream, self._scan))  # type: ignore[arg-type]

    def _scan(self, chunk: bytes) -> None:
        *lines, self._line = (self._line + chunk).split(b"\n")
        if not chunk:  # end of output: the last, unterminated line
            lines, self._line = [*lines, self._line], b""
        self.alarms += [line.decode(errors="replace") for line in lines if ALARMS.search(line)]
        self._marks.update(m.decode() for line in lines for m in MARK.findall(line))


class _Tee:
    """A stream reader that also shows every chunk it reads to `sink`."""

    def __init__(self, stream: asyncio.StreamReader, sink: Callable[[bytes], None]) -> None:
        self._stream, self._sink = stream, sink

    async def read(self, n: int = -1) -> bytes:
        chunk = await self._stream.read(n)
        self._sink(chunk)
        return chunk


# --- message types and their schemas -------------------------------------------------------

MODELS: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(InboundMessage)[0])
}
TYPES = sorted(MESSAGE_TYPES)


class UnsupportedSchema(Exception):
    """A JSON-schema construct `from_schema` does not turn into a strategy."""


def aliases(model: type[BaseModel]) -> dict[str, list[str]]:
    """Field name in the JSON schema → the other spellings its validation alias accepts."""
    found: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str)]
            if choices:
                found[choices[0]] = choices[1:] + ([name] if name not in choices else [])
    return found


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def from_schema(
    schema: dict[str, Any],
    defs: dict[str, Any],
    values: dict[str, st.SearchStrategy[Any]],
    name: str | None = None,
) -> st.SearchStrategy[Any]:
    """Values a JSON schema (as pydantic writes them) describes; strings capped at 64
    characters (huge ones are the hostile strategies' job). `values` steers named fields."""
    if name is not None and name in values:
        return values[name]
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, values)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of(
            [from_schema(s, defs, values) for s in schema.get("anyOf") or schema["oneOf"]]
        )
    kind = schema.get("type")
    if kind is None and set(schema) <= {"title", "description", "default"}:
        return JSON_VALUES  # Any
    if kind == "object":
        if "properties" in schema:
            required = set(schema.get("required", ()))
            props = schema["properties"]
            return st.fixed_dictionaries(
                {k: from_schema(v, defs, values, k) for k, v in props.items() if k in required},
                optional={
                    k: from_schema(v, defs, values, k)
                    for k, v in props.items()
                    if k not in required
                },
            )
        extra = schema.get("additionalProperties", True)
        keys = from_schema({"type": "string", **schema.get("propertyNames", {})}, defs, values)
        items = JSON_VALUES if extra is True else from_schema(extra, defs, values)
        return st.dictionaries(keys, items, max_size=min(schema.get("maxProperties", 4), 4))
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), defs, values),
            min_size=schema.get("minItems", 0),
            max_size=max(schema.get("minItems", 0), min(schema.get("maxItems", 4), 4)),
        )
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 64), 64)))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise UnsupportedSchema(json.dumps(schema)[:200])


# --- values that mean something here -------------------------------------------------------


def _png(size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MEDIA = st.sampled_from(
    [
        _b64(_png()),
        _b64(_png((2000, 40))),  # wide: resized for vision
        _b64(make_wav(0.1)),
        "data:image/png;base64," + _b64(_png()),
        _b64(b"<svg onload=alert(1)>"),  # not an image, well-formed base64
        _b64(b"\x00" * 64),
        "not base64 at all!!",
        "====",
        "",
    ]
) | st.binary(max_size=64).map(_b64)

INJECTIONS = [
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "1; SELECT * FROM api_keys",
    "admin'--",
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "%s%s%s%n%x",
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/dev/zero",
    "file:///etc/shadow",
    "http://169.254.169.254/latest/meta-data/",
    "\r\nSet-Cookie: pwned=1",
    "\u202egnp.exe",
    "\ufeff\u200b\u200d\u2060",
    "a\x00b",
    "\x00",
    "🤖" * 20,
    "$(reboot)",
    "`id`",
    "__proto__",
    "null",
    "",
    " ",
]
SURROGATES = st.characters(categories=["Cs"])
HOSTILE_TEXT = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.lists(st.one_of(SURROGATES, st.characters()), min_size=1, max_size=8).map("".join),
    st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Mn"]), min_size=1, max_size=20),
)


def addresses() -> st.SearchStrategy[str]:
    """Worker addresses whose host refuses at once (a probe must not wait on DNS), with
    tails: hostile paths, or text that runs into the port."""
    hosts = st.sampled_from(["127.0.0.1:9", "localhost:9", "http://127.0.0.1:9", "[::1]:9"])
    tails = st.sampled_from(["", "/", "/v1", "/'; DROP TABLE workers;--", "/<script>", "/../.."])
    return st.builds(
        lambda h, t: h + t, hosts, tails | HOSTILE_TEXT | HOSTILE_TEXT.map("/".__add__)
    )


def field_values(guids: tuple[str, ...]) -> dict[str, st.SearchStrategy[Any]]:
    """Steered fields, by name wherever they appear."""
    guid = st.sampled_from(guids) | st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    return {
        "id": st.text(max_size=20) | st.integers(-(2**63), 2**63),
        "user_guid": guid,
        "guid": guid,
        "query_id": guid,
        "address": addresses(),
        "image": MEDIA,
        "audio": MEDIA,
        "chunk_data": MEDIA,
        "options": st.dictionaries(st.text(max_size=8), JSON_LEAVES, max_size=3),
    }


@cache
def valid_messages(kind: str, guids: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """Messages of type `kind` shaped as its schema says (a validator may still refuse some:
    cross-field rules are not in the schema)."""
    model = MODELS[kind]
    schema = model.model_json_schema()
    base = from_schema(schema, schema.get("$defs", {}), field_values(guids))
    spellings = aliases(model)
    if not spellings:
        return base

    @st.composite
    def respelled(draw: st.DrawFn) -> dict[str, Any]:
        message = draw(base)
        for name, others in spellings.items():
            if name in message and draw(st.booleans()):
                message[draw(st.sampled_from(others))] = message.pop(name)
        return message

    return respelled()


# --- hostile values and mutations ----------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def deep_text(depth: int) -> str:
    """`nested(depth)` as JSON text, written without recursion."""
    opens = "".join('{"a": ' if level % 2 == 0 else "[" for level in range(depth))
    closes = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opens + "1" + closes


HUGE_SIZES = [129, 257, 2_001, 4_001, 32_001, 65_537, 200_001, 600_000]
HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(
        [-1, 0, 2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**300)]
    ),
    st.floats(),  # NaN and ±Infinity too: Python's JSON writes and reads them
    HOSTILE_TEXT,
    st.builds(
        lambda n, c: c * n, st.sampled_from(HUGE_SIZES), st.sampled_from(["A", "é", "€", "🤖"])
    ),
    JSON_VALUES,
    st.integers(10, 300).map(nested),
    st.lists(HOSTILE_TEXT, max_size=5),
    st.dictionaries(HOSTILE_TEXT, JSON_LEAVES, max_size=4),
)
HOSTILE_IDS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(),
    st.sampled_from([2**64, -(2**63) - 1, 10**120]),
    st.text(min_size=129, max_size=300),
    HOSTILE_TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def key_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key (and list index) path inside `value`, in a stable order."""
    paths: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            paths += [(*prefix, key), *key_paths(value[key], (*prefix, key))]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += [(*prefix, index), *key_paths(item, (*prefix, index))]
    return paths


def containers(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict inside `value` (itself included)."""
    found = [prefix] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            found += containers(value[key], (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += containers(item, (*prefix, index))
    return found


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw: st.DrawFn, message: dict[str, Any]) -> Any:
    """`message` with one hostile change."""
    message = copy.deepcopy(message)
    paths = key_paths(message)
    how = draw(st.sampled_from(["drop", "extra", "replace", "replace", "type", "id", "whole"]))
    if how in ("drop", "replace") and paths:
        path = draw(st.sampled_from(paths))
        parent = at(message, path[:-1])
        if how == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(HOSTILE_VALUES)
    elif how == "extra" or (how in ("drop", "replace") and not paths):
        parent = at(message, draw(st.sampled_from(containers(message))))
        name = draw(
            st.sampled_from(["extra", "__proto__", "constructor", "$where", "id"]) | HOSTILE_TEXT
        )
        parent[name] = draw(HOSTILE_VALUES)
    elif how == "type":
        message["type"] = draw(
            st.sampled_from(TYPES)
            | HOSTILE_TEXT
            | HOSTILE_VALUES
            | st.sampled_from(["PING", " ping"])
        )
    elif how == "id":
        message["id"] = draw(HOSTILE_IDS)
    else:  # the message itself is not a message
        return draw(st.lists(st.just(message), min_size=1, max_size=2) | HOSTILE_VALUES)
    return message


@st.composite
def hostile_messages(draw: st.DrawFn, kind: str, guids: tuple[str, ...]) -> Any:
    message: Any = draw(valid_messages(kind, guids))
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(message, dict):
            break
        message = draw(mutated(message))
    return message


# --- frames ------------------------------------------------------------------------------


class Frame:
    """One WebSocket frame to send; its repr is short, for Hypothesis's failure report."""

    __slots__ = ("how", "raw")

    def __init__(self, raw: str | bytes, how: str) -> None:
        self.raw, self.how = raw, how

    def __repr__(self) -> str:
        shown = self.raw if len(self.raw) <= 300 else self.raw[:300]
        more = f" …({len(self.raw)} in all)" if len(self.raw) > 300 else ""
        return f"Frame({self.how}: {shown!r}{more})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's printer
        printer.text(repr(self))


def utf8_sendable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def framed(draw: st.DrawFn, value: Any) -> Frame:
    """A JSON value as a text frame (escaped or raw unicode) or a binary frame."""
    escaped = json.dumps(value)
    raw_unicode = json.dumps(value, ensure_ascii=False)
    how = draw(
        st.sampled_from(["text", "text-unicode", "binary-utf8", "binary-utf16", "binary-utf32"])
    )
    if how == "text-unicode" and utf8_sendable(raw_unicode):
        return Frame(raw_unicode, how)
    if len(escaped) > LIMIT:  # over the limit anyway: stay far below the transport's (1009)
        return Frame(escaped, "text")
    if how == "binary-utf8":
        return Frame(escaped.encode(), how)
    if how == "binary-utf16":
        return Frame(escaped.encode("utf-16-le"), how)
    if how == "binary-utf32":
        return Frame(escaped.encode("utf-32-be"), how)
    return Frame(escaped, "text")


def padded(limit_delta: int, char: str) -> Frame:
    """A ping padded to `LIMIT + limit_delta` characters of `char`."""
    head = '{"type":"ping","id":"pad","pad":"'
    return Frame(
        head + char * (LIMIT + limit_delta - len(head) - 2) + '"}', f"padded{limit_delta:+}"
    )


NOT_MESSAGES = st.one_of(
    # JSON that is not an object
    st.one_of(JSON_LEAVES, st.lists(JSON_VALUES, max_size=3), HOSTILE_TEXT).flatmap(framed),
    # not JSON
    st.text(st.characters(codec="utf-8"), max_size=80)
    .filter(utf8_sendable)
    .map(lambda t: Frame(t, "text")),
    st.sampled_from(
        [
            '{"type": "ping"',
            "{'type': 'ping'}",
            '{"type": "ping"}}',
            "{,}",
            "NaN",
            "",
            " ",
            '{"type": "ping", "id": 1,}',
            '\ufeff{"type": "ping"}',
            '{"type": "\\ud800"}',
            '{"type": "ping", "type": "get_stats", "id": "dup"}',
            "[" * 300 + "]" * 300,
        ]
    ).map(lambda t: Frame(t, "text")),
    # binary frames
    st.binary(max_size=200).map(lambda b: Frame(b, "binary")),
    st.sampled_from(
        [
            b"\xff\xfe\x00garbage",
            b'\xef\xbb\xbf{"type":"ping","id":"bom"}',
            '{"type":"set_nickname","nickname":"ñandú"}'.encode("latin-1"),
        ]
    ).map(lambda b: Frame(b, "binary")),
    # nesting past any parser's patience, integer literals past Python's conversion limit
    st.builds(
        lambda depth, where: Frame(
            deep_text(depth)
            if where == "bare"
            else '{"type": "chat", "id": "deep", "prompt": "hi", "options": {"k": '
            + deep_text(depth)
            + "}}",
            f"nested{depth}-{where}",
        ),
        st.sampled_from([31, 32, 33, 100, 960, 5_000, 100_000]),
        st.sampled_from(["bare", "in-options"]),
    ),
    st.builds(
        lambda digits, sign: Frame(f'{{"type": "ping", "id": {sign}{"9" * digits}}}', "text"),
        st.sampled_from([19, 20, 4_300, 4_301, 50_000]),
        st.sampled_from(["", "-"]),
    ),
    # sizes around the limit, in bytes
    st.sampled_from([(-1, "x"), (0, "x"), (1, "x"), (-(LIMIT * 2 // 3), "€")]).map(
        lambda a: padded(*a)
    ),
)


# --- known bugs: kept out of the fuzzing, reproduced (xfail) below ---------------------------


KNOWN_BUGS: dict[str, Callable[[str | bytes], bool]] = {}  # none open


def known_bug(frame: Frame) -> str | None:
    return next((name for name, hit in KNOWN_BUGS.items() if hit(frame.raw)), None)


# --- the oracle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    code: str | None = None  # an error of this code, else a reply
    response_to: Any = None
    message_type: str | None = None


def expected(frame: Frame, *, sysop: bool) -> Expected:
    raw = frame.raw
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > LIMIT:
        return Expected(code="too_large")
    try:
        # The parser applies the sysop gate: from anyone else a sysop type is `forbidden`
        # before its fields are looked at.
        message = parse_message(raw, sysop=sysop)
    except ProtocolError as exc:
        return Expected(code=exc.code, response_to=exc.response_to)
    return Expected(response_to=message.id, message_type=getattr(message, "type", None))


# --- the realm and its connections ---------------------------------------------------------


@dataclass
class Session:
    """One role's connection, reopened if a bug closed it."""

    broker: BrokerProcess
    headers: dict[str, str]
    client: BusClient | None = None

    async def ensure(self) -> BusClient:
        if self.client is None or self.client.closed.is_set():
            if self.client is not None:
                await self.client.__aexit__(None, None, None)
            self.client = BusClient(self.broker.ws_url, self.headers)
            await self.client.__aenter__()
            await self.client.expect("user_info")
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.__aexit__(None, None, None)


@dataclass
class FuzzRealm:
    broker: WatchedBroker
    guest: Session
    sysop: Session
    guest_guid: str
    sysop_guid: str
    victim_guid: str  # a user nobody is connected as: the sysop may ban and unban it
    frames_sent: int = 0

    @property
    def guids(self) -> tuple[str, ...]:
        return (self.victim_guid, self.sysop_guid)


async def _guid_of(session: Session) -> str:
    client = await session.ensure()
    reply = await client.request({"type": "get_previous_queries"})  # after the greeting
    assert reply["type"] == "previous_queries", reply
    info = next(m for m in client.seen if m["type"] == "user_info")
    return str(info["data"]["guid"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_realm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FuzzRealm]:
    data_dir = tmp_path_factory.mktemp("bus-fuzz")
    key = await create_sysop(data_dir)
    broker = WatchedBroker(data_dir, env=BROKER_ENV)
    async with broker:
        guest = Session(broker, {"Cookie": f"rentahal_session={await broker.guest_cookie()}"})
        sysop = Session(broker, {"Authorization": f"Bearer {key}"})
        victim = Session(broker, {"Cookie": f"rentahal_session={await broker.guest_cookie()}"})
        victim_guid = await _guid_of(victim)
        await victim.close()
        realm = FuzzRealm(
            broker, guest, sysop, await _guid_of(guest), await _guid_of(sysop), victim_guid
        )
        try:
            yield realm
        finally:
            await guest.close()
            await sysop.close()
    print(f"--- {realm.frames_sent} frames; broker output (last 256 KiB) ---\n{broker.output}")


# --- one example ---------------------------------------------------------------------------


def _describe(messages: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(m)[:300] for m in messages[-12:])


async def exchange(realm: FuzzRealm, session: Session, frame: Frame, *, sysop: bool) -> None:
    """Send one frame and hold the broker to the oracle; the connection must stay usable."""
    want = expected(frame, sysop=sysop)
    client = await session.ensure()
    client.inbox.clear()
    start, alarms = len(client.seen), len(realm.broker.alarms)
    realm.frames_sent += 1
    await client.send(frame.raw)
    probe = f"alive-{uuid.uuid4().hex}"
    await client.send({"type": "ping", "id": probe})
    try:
        pong = await client.expect("pong", lambda m: m.get("response_to") == probe, REPLY_WITHIN)
    except TimeoutError:
        raise AssertionError(
            f"no answer to a ping after {frame!r}: connection closed={client.closed.is_set()} "
            f"(code {client.close_code}); received:\n{_describe(client.seen[start:])}"
        ) from None
    # Replies to one connection are written in order and messages are handled one at a
    # time, so every direct reply to the frame came before the pong.
    window = client.seen[
        start : next(i for i in range(len(client.seen) - 1, -1, -1) if client.seen[i] is pong)
    ]
    await realm.broker.settled()
    new_alarms = realm.broker.alarms[alarms:]
    assert not new_alarms, f"{frame!r} made the broker log:\n" + "\n".join(new_alarms)
    internal = [m for m in window if m.get("type") == "error" and m.get("code") == "internal"]
    assert not internal, f"{frame!r} → {internal}"
    if want.code is not None:
        errors = [
            m
            for m in window
            if m.get("type") == "error"
            and m.get("code") == want.code
            and m.get("response_to") == want.response_to
        ]
        assert errors, (
            f"{frame!r} should get error {want.code} (response_to={want.response_to!r}); "
            f"got:\n{_describe(window)}"
        )
    elif want.response_to is not None and want.message_type != "pong":
        replies = [m for m in window if m.get("response_to") == want.response_to]
        assert replies, f"{frame!r} got no reply with response_to; got:\n{_describe(window)}"
    if want.message_type == "pong" and want.response_to is not None:
        assert not [m for m in window if m.get("response_to") == want.response_to], window


# --- the tests ----------------------------------------------------------------------------

# `RENTAHAL_TEST_FUZZ=deep pytest tests/test_bus_fuzz.py` for a deeper, random hunt.
SCALE = FUZZ_SCALE
FUZZ = settings(
    max_examples=8 * SCALE,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
ROLES = ["guest", "sysop"]


def test_every_message_type_has_a_strategy() -> None:
    """Each type of the union has a strategy, and it can make a message the broker's own
    parser accepts as that type (else its "valid" messages would all be refusals)."""
    from hypothesis import find

    assert set(MODELS) == set(MESSAGE_TYPES)
    guids = ("0" * 32, "f" * 32)
    for kind in TYPES:
        found = find(
            valid_messages(kind, guids),
            lambda m, k=kind: _parses_as(m, k),
            settings=settings(
                max_examples=500,
                database=None,
                phases=[Phase.generate],  # any one will do: no shrinking
                suppress_health_check=list(HealthCheck),
            ),
        )
        assert found["type"] == kind


def _parses_as(message: dict[str, Any], kind: str) -> bool:
    try:
        return getattr(parse_message(json.dumps(message)), "type", None) == kind
    except ProtocolError:
        return False


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", TYPES)
@FUZZ
@given(data=st.data())
async def test_valid_messages(
    fuzz_realm: FuzzRealm, kind: str, role: str, data: st.DataObject
) -> None:
    message = data.draw(valid_messages(kind, fuzz_realm.guids), label="message")
    frame = data.draw(framed(message), label="frame")
    assume(known_bug(frame) is None)
    session = fuzz_realm.sysop if role == "sysop" else fuzz_realm.guest
    await exchange(fuzz_realm, session, frame, sysop=role == "sysop")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", TYPES)
@FUZZ
@given(data=st.data())
async def test_hostile_messages(
    fuzz_realm: FuzzRealm, kind: str, role: str, data: st.DataObject
) -> None:
    message = data.draw(hostile_messages(kind, fuzz_realm.guids), label="message")
    frame = data.draw(framed(message), label="frame")
    assume(known_bug(frame) is None)
    session = fuzz_realm.sysop if role == "sysop" else fuzz_realm.guest
    await exchange(fuzz_realm, session, frame, sysop=role == "sysop")


@pytest.mark.parametrize("role", ROLES)
@settings(FUZZ, max_examples=40 * SCALE)
@given(frame=NOT_MESSAGES)
async def test_frames_that_are_not_messages(fuzz_realm: FuzzRealm, role: str, frame: Frame) -> None:
    assume(known_bug(frame) is None)
    session = fuzz_realm.sysop if role == "sysop" else fuzz_realm.guest
    await exchange(fuzz_realm, session, frame, sysop=role == "sysop")


async def test_frames_over_the_transport_limit_are_closed_with_1009(fuzz_realm: FuzzRealm) -> None:
    """Past uvicorn's `ws_max_size` there is no `too_large` reply: the WebSocket layer closes
    that connection with 1009 (message too big). The broker and every other connection
    carry on, and the same user can connect again."""
    broker = fuzz_realm.broker
    cookie = await broker.guest_cookie()
    for frame in (b"[" + b" " * TRANSPORT_LIMIT + b"]", "[" + " " * TRANSPORT_LIMIT + "]"):
        bus = broker.bus(cookie=cookie)
        await bus.__aenter__()
        try:
            await bus.expect("user_info")
            with contextlib.suppress(ConnectionClosed, OSError):  # closed while still sending
                await bus.send(frame)
            await asyncio.wait_for(bus.closed.wait(), REPLY_WITHIN)
            assert bus.close_code == 1009, bus.close_code
        finally:
            with contextlib.suppress(ConnectionClosed, OSError):
                await bus.__aexit__(None, None, None)
    async with broker.bus(cookie=cookie) as bus:
        assert (await bus.request({"type": "ping"}))["type"] == "pong"
    client = await fuzz_realm.guest.ensure()
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_the_broker_survived_with_clean_output(fuzz_realm: FuzzRealm) -> None:
    """Last in the module: everything it logged during the run (late lines too) was clean,
    the process is up and both connections still answer."""
    assert fuzz_realm.broker.running
    for session in (fuzz_realm.guest, fuzz_realm.sysop):
        client = await session.ensure()
        assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert fuzz_realm.broker.alarms == [], "\n".join(fuzz_realm.broker.alarms)


# --- bugs this fuzzing found ---------------------------------------------------------------


@dataclass
class BugRealm:
    broker: WatchedBroker
    sysop_key: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bug_realm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BugRealm]:
    """A broker of their own, so their tracebacks stay out of the fuzz broker's output; its
    health monitor ticks every 0.2 s."""
    data_dir = tmp_path_factory.mktemp("bus-bugs")
    key = await create_sysop(data_dir)
    env = BROKER_ENV | {"RENTAHAL_HEALTH_CHECK_INTERVAL": "0.2"}
    async with WatchedBroker(data_dir, env=env) as broker:
        yield BugRealm(broker, key)


REFUSALS = {"malformed", "invalid", "unknown_type", "too_large"}


async def _refused(broker: WatchedBroker, frame: Frame, **connect: str) -> dict[str, Any]:
    """The frame is refused — an error of a refusal code, not `internal` — the connection
    stays usable, and the broker logs no traceback. (Which refusal is the fix's choice.)"""
    alarms = len(broker.alarms)
    async with broker.bus(**(connect or {"cookie": await broker.guest_cookie()})) as bus:
        await bus.expect("user_info")
        await bus.send(frame.raw)
        error = await bus.expect("error", within=REPLY_WITHIN)
        assert error["code"] in REFUSALS, error
        assert (await bus.request({"type": "ping"}))["type"] == "pong"
    await broker.settled()
    assert broker.alarms[alarms:] == []
    return error


# Fixed (commit "Bus hardening from fuzzing"); kept as regressions. Before the fix each of
# these was an `internal` error with a traceback, or a dropped connection.
FIXED = {
    "huge-int-literal": Frame('{"type": "ping", "id": ' + "9" * 5000 + "}", "text"),
    "deep-nesting-decode": Frame("[" * 100_000 + "]" * 100_000, "text"),
    "deep-nesting-encode": Frame(
        '{"type": "chat", "prompt": "hi", "options": {"k": ' + deep_text(960) + "}}", "text"
    ),
    "lone-surrogate-id": Frame('{"type": "no_such_type", "id": "\\ud800"}', "text"),
    # `chat` took any options, and its QuerySpec refused them only in the handler.
    "chat-options-over-the-bound": Frame(
        json.dumps({"type": "chat", "prompt": "hi", "options": {"k": "x" * 5000}}), "text"
    ),
}


@pytest.mark.parametrize("name", sorted(FIXED))
async def test_fixed_frames_are_refused(bug_realm: BugRealm, name: str) -> None:
    await _refused(bug_realm.broker, FIXED[name])


async def test_an_unusable_worker_address_is_refused(bug_realm: BugRealm) -> None:
    """Fixed: '127.0.0.1:9\\x12' made the probe raise httpx.InvalidURL, the worker was stored
    anyway and every later health tick failed. Now refused, and the monitor keeps ticking."""
    broker = bug_realm.broker
    frame = Frame(
        json.dumps({"type": "add_worker", "worker": {"name": "bad", "address": "127.0.0.1:9\x12"}}),
        "text",
    )
    error = await _refused(broker, frame, api_key=bug_realm.sysop_key)
    assert error["code"] == "invalid", error
    headers = {"Authorization": f"Bearer {bug_realm.sysop_key}"}
    async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
        workers = (await http.get("/api/v1/workers")).json()
    assert "bad" not in [w["name"] for w in workers]  # not stored: no health tick can fail


KNOWN_BUG_FRAMES: dict[str, Frame] = {}


def test_known_bugs_have_reproductions() -> None:
    """Every bug kept out of the fuzzing has its reproduction (below)."""
    assert set(KNOWN_BUG_FRAMES) == set(KNOWN_BUGS)


async def test_an_unusable_huggingface_model_name_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Fixed: a model id that makes no URL ("a\\x13b") was stored, then refused as a
    worker: `internal`, and the broker could not start again. Now refused, nothing stored:
    the broker still starts afterwards."""
    data_dir = tmp_path_factory.mktemp("hf-name")
    key = await create_sysop(data_dir)
    async with WatchedBroker(data_dir, env=BROKER_ENV) as broker:
        frame = Frame(
            json.dumps({"type": "add_huggingface_model", "model": {"name": "a\x13b"}}), "text"
        )
        await _refused(broker, frame, api_key=key)
    async with WatchedBroker(data_dir, env=BROKER_ENV) as broker:
        assert broker.running
