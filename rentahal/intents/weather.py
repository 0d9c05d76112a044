"""The weather intent: the weather now and today's high and low, as one short spoken answer,
from OpenWeatherMap's One Call API 3.0 and its Geocoding API.

The broker calls OpenWeatherMap itself so that the realm's key never reaches a page (SPEC
§7). That key travels in the query string (``appid``), so URLs, requests and httpx's
exception texts (which quote the URL) are kept out of every message and log line here;
only the API's name and the HTTP status are reported.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import ClassVar

import httpx
import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError

from rentahal.config import Settings
from rentahal.core.errors import ErrorCode
from rentahal.intents.base import Answer, Intent, IntentCall, IntentError, Location, Units

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 15.0
"""Seconds to wait for each OpenWeatherMap call: a spoken answer later than this is useless."""

_KMH_PER_MS = 3.6
_UPSTREAM_MESSAGE_LIMIT = 200

# "weather in Paris", "what's the weather like in New York for today": the place follows
# the first of these words. Without one, the whole text is the place ("weather Paris").
_PLACE_AFTER = re.compile(r"\b(?:in|for|near|around)\s+(?P<place>.+)$", re.IGNORECASE)
# Words around a place that are not part of it; only leading and trailing ones are dropped,
# so a name such as "Isle of Man" stays whole.
_FILLER = frozenset(
    # A word list reads better as text than as 56 quoted items.
    """a an the what what's whats how how's hows is it it's its be will going to like weather
    forecast temperature outside today tonight now right currently current please tell me
    give report raining rain snowing snow sunny hot cold here there my area location local
    where i am in for near around of""".split()  # noqa: SIM905
)


class _Condition(BaseModel):
    description: str


class _Current(BaseModel):
    temp: float
    wind_speed: float | None = None
    weather: list[_Condition] = []


class _DayTemperatures(BaseModel):
    min: float
    max: float


class _Day(BaseModel):
    temp: _DayTemperatures


class Forecast(BaseModel):
    """The part of a One Call answer the summary uses; the rest is ignored."""

    current: _Current
    daily: list[_Day] = []


class _Place(BaseModel):
    name: str
    lat: float
    lon: float


_PLACES = TypeAdapter(list[_Place])


class WeatherIntent(Intent):
    """Weather where the user is (browser geolocation), in a place they name, or at the
    realm's default location."""

    name: ClassVar[str] = "weather"
    triggers: ClassVar[tuple[str, ...]] = ("weather", "forecast")
    keywords: ClassVar[tuple[str, ...]] = (
        "what's the weather",
        "what is the weather",
        "weather like",
        "weather forecast",
        "temperature outside",
        "is it raining",
        "is it snowing",
        "how cold is it",
        "how hot is it",
    )
    description: ClassVar[str] = (
        "The weather now and today's high and low, where you are or in a place you name."
    )

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    def available(self, settings: Settings) -> bool:
        """Offered only when the realm has an OpenWeatherMap key."""
        return _api_key(settings) is not None

    async def handle(self, call: IntentCall) -> Answer:
        """Find the place, fetch its weather and say it in a few sentences.

        A place named in the words wins over the browser's location (asking for "weather
        in Paris" from London means Paris); the realm's default location is the last resort.
        """
        key = _api_key(call.settings)
        if key is None:
            raise IntentError(
                ErrorCode.NOT_CONFIGURED,
                "Weather is not set up on this realm: the sysop has not added an "
                "OpenWeatherMap API key.",
            )
        api = _OpenWeatherMap(call.http, call.settings.openweathermap_endpoint, key, self.timeout)
        named = named_place(call.text)
        if named is None and call.location is not None:
            forecast, name = await _where_you_are(api, call.location, call.units)
            return Answer(summary(name, forecast, call.units))
        if named is not None:
            query, missing = named, f"I could not find a place called {named}."
        else:
            query = call.settings.weather_default_location.strip()
            if not query:
                raise IntentError(
                    ErrorCode.INVALID,
                    "I don't know where you are. Allow this page to use your location or name "
                    'a place, as in "weather in Paris"; the sysop can also set a default '
                    "weather location for the realm.",
                )
            missing = (
                f"The realm's default weather location, {query}, was not found; the sysop "
                "needs to correct it."
            )
        place = await api.locate(query, missing=missing)
        forecast = await api.forecast(place.lat, place.lon, call.units)
        return Answer(summary(place.name, forecast, call.units))


def named_place(text: str) -> str | None:
    """The place named in the words after the trigger ("in Paris" → "Paris"), as the
    geocoder wants it ("Springfield, IL, US" → "Springfield,IL,US"); None if there is none."""
    match = _PLACE_AFTER.search(text)
    words = (match.group("place") if match else text).strip(" \t.?!\"'").split()
    while words and words[0].casefold().strip(",") in _FILLER:
        words.pop(0)
    while words and words[-1].casefold().strip(",.?!") in _FILLER:
        words.pop()
    place = re.sub(r"\s*,\s*", ",", " ".join(words)).strip(",")
    return place or None


def summary(place: str | None, forecast: Forecast, units: Units) -> str:
    """A few sentences to speak: temperature and sky now, today's high and low, the wind."""
    metric = units == "metric"
    current = forecast.current
    temperature = _whole(current.temp)
    degrees = "degree" if abs(temperature) == 1 else "degrees"
    where = f"In {place}" if place else "Where you are"
    now = f"{where} it is {temperature} {degrees} {'Celsius' if metric else 'Fahrenheit'}"
    if current.weather:
        now += f" with {current.weather[0].description}"
    sentences = [f"{now}."]
    if forecast.daily:
        today = forecast.daily[0].temp
        sentences.append(f"Today's high is {_whole(today.max)} and the low is {_whole(today.min)}.")
    if current.wind_speed is not None:
        # The API gives metres per second with metric units; people expect km/h.
        speed = _whole(current.wind_speed * _KMH_PER_MS if metric else current.wind_speed)
        unit = "kilometres per hour" if metric else "miles per hour"
        sentences.append(f"The wind is {speed} {unit}.")
    return " ".join(sentences)


def _whole(value: float) -> int:
    """Round half up (12.5 → 13), as people do, not to even as `round` does."""
    return math.floor(value + 0.5)


def _api_key(settings: Settings) -> str | None:
    """The realm's key; an empty one (an unset environment variable) counts as none."""
    secret = settings.openweathermap_api_key
    key = secret.get_secret_value().strip() if secret is not None else ""
    return key or None


async def _where_you_are(
    api: _OpenWeatherMap, location: Location, units: Units
) -> tuple[Forecast, str | None]:
    """The forecast and the name of the browser's position, asked for at the same time."""
    try:
        async with asyncio.TaskGroup() as group:
            forecast = group.create_task(api.forecast(location.lat, location.lon, units))
            name = group.create_task(api.name_of(location.lat, location.lon))
    except* IntentError as failed:
        raise failed.exceptions[0] from None
    return forecast.result(), name.result()


class _OpenWeatherMap:
    """The three calls the intent makes, each turning every failure into an `IntentError`
    whose message names no URL."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, key: str, timeout: float) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._key = key
        self._timeout = timeout

    async def forecast(self, lat: float, lon: float, units: Units) -> Forecast:
        body = await self._get(
            "One Call",
            "/data/3.0/onecall",
            {"lat": lat, "lon": lon, "exclude": "minutely,hourly,alerts", "units": units},
        )
        try:
            return Forecast.model_validate_json(body)
        except ValidationError:
            raise self._unreadable("One Call") from None

    async def locate(self, query: str, *, missing: str) -> _Place:
        """The first place the geocoder finds for ``query``; NOT_FOUND with ``missing``."""
        body = await self._get("geocoding", "/geo/1.0/direct", {"q": query, "limit": 1})
        places = self._places(body)
        if not places:
            raise IntentError(ErrorCode.NOT_FOUND, missing)
        return places[0]

    async def name_of(self, lat: float, lon: float) -> str | None:
        """The name of the place at a point, or None: without it the weather is still worth
        telling ("where you are"), so a failed lookup does not fail the answer."""
        try:
            body = await self._get(
                "reverse geocoding", "/geo/1.0/reverse", {"lat": lat, "lon": lon, "limit": 1}
            )
            places = self._places(body)
        except IntentError:
            return None
        return places[0].name if places else None

    def _places(self, body: bytes) -> list[_Place]:
        try:
            return _PLACES.validate_json(body)
        except ValidationError:
            raise self._unreadable("geocoding") from None

    async def _get(self, api: str, path: str, params: dict[str, str | float | int]) -> bytes:
        """The body of a successful call. Exceptions are turned into errors outside their
        ``except`` block, so that no httpx exception (whose text quotes the URL, key
        included) is even chained to what the caller sees."""
        failure: str
        try:
            response = await self._http.get(
                f"{self._endpoint}{path}",
                params={**params, "appid": self._key},
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            failure = (
                f"OpenWeatherMap did not answer within {self._timeout:g} seconds; try again later."
            )
            log.warning("weather_upstream_timeout", api=api)
        except httpx.HTTPError as exc:
            failure = "OpenWeatherMap could not be reached; try again later."
            log.warning("weather_upstream_unreachable", api=api, error=type(exc).__name__)
        else:
            if response.is_success:
                return response.content
            failure = self._refusal(response)
            log.warning("weather_upstream_refused", api=api, status=response.status_code)
        raise IntentError(ErrorCode.UPSTREAM_ERROR, failure)

    def _refusal(self, response: httpx.Response) -> str:
        status = response.status_code
        if status == 401:
            return (
                "OpenWeatherMap refused this realm's weather API key; the sysop needs to check it."
            )
        if status == 429:
            return "OpenWeatherMap is busy (too many requests from this realm); try again later."
        detail = f"HTTP {status}"
        message = _upstream_message(response)
        if message:
            # Whatever the API says is passed on for the sysop, but never the key.
            detail += f": {message.replace(self._key, '[redacted]')[:_UPSTREAM_MESSAGE_LIMIT]}"
        return f"OpenWeatherMap could not answer ({detail})."

    @staticmethod
    def _unreadable(api: str) -> IntentError:
        return IntentError(
            ErrorCode.UPSTREAM_ERROR,
            f"OpenWeatherMap sent a {api} answer that could not be read; try again later.",
        )


def _upstream_message(response: httpx.Response) -> str:
    """The ``message`` of OpenWeatherMap's error body ``{"cod", "message"}``, if it has one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message.strip() if isinstance(message, str) else ""
