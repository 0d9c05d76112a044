"""Stub of OpenWeatherMap: One Call API 3.0 and the Geocoding API, as the weather intent
calls them.

- ``GET /data/3.0/onecall?lat=&lon=&exclude=&units=&lang=&appid=``: ``lat, lon`` (echoed to
  4 decimals), ``timezone``, ``timezone_offset``, then ``current``, ``minutely`` (61
  minutes), ``hourly`` (48 hours) and ``daily`` (8 days, each with its ``summary``, ``temp
  {day, min, max, night, eve, morn}``, ``feels_like``, ``weather`` and ``pop``), less the
  parts named in ``exclude`` (comma separated; unknown names are ignored). There are never
  government alerts, so ``alerts`` is always absent, as the real API leaves it out when
  there are none. ``lang`` is accepted and ignored: descriptions are always English.
- ``GET /geo/1.0/direct?q={city name},{state code},{country code}&limit=&appid=``: the
  places of the gazetteer below whose name (or a local name) is the city name, filtered by
  country code (ISO 3166) and, for the US, state code; ``[]`` when none.
- ``GET /geo/1.0/reverse?lat=&lon=&limit=&appid=``: the gazetteer places within
  ``REVERSE_RADIUS_KM`` of the point, nearest first; ``[]`` in open country.

Geocoding results are ``{name, local_names, lat, lon, country, state}`` (``local_names``
and ``state`` only where the place has them); ``limit`` is 1–5, 5 by default.

The weather comes from one fixed data set in standard units (kelvin, metres per second):
each gazetteer place has its own conditions, used for any point within
``REVERSE_RADIUS_KM`` of it, and every other point on Earth gets ``ELSEWHERE``. ``units``
converts it: ``metric`` to degrees Celsius (wind stays in m/s), ``imperial`` to degrees
Fahrenheit and miles per hour, ``standard`` (the default, also used for an unknown value)
leaves it alone; every figure is rounded to 2 decimals, like the real API. The daily
forecast repeats today's figures; times are real (``dt`` is now) but time zone offsets are
fixed (no daylight saving time).

Errors use OpenWeatherMap's body ``{"cod", "message"}``: 401 with its "Invalid API key"
message when ``appid`` is missing or, on a stub started with an API key, is not that key
(without one, any non-empty ``appid`` is accepted); 400 ``Nothing to geocode`` for a
missing ``lat``/``lon``/``q``, ``wrong latitude`` / ``wrong longitude`` for a coordinate
that is not a number in range, ``wrong limit`` for a ``limit`` that is not a positive
integer.

Behaviour (``/_stub/config``), applied to all three routes after the key check: ``latency``
delays the answer; ``fail_status`` (with ``fail_count``) answers that status with
OpenWeatherMap's body for it; ``reply``, when set, is sent verbatim as a 200
``application/json`` body, to play an upstream that returns garbage.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rentahal.testing.stubs.base import build_app, pause, reason_phrase
from rentahal.testing.stubs.state import StubState

INVALID_KEY_MESSAGE = (
    "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."
)
RATE_LIMIT_MESSAGE = (
    "Your account is temporary blocked due to exceeding of requests limitation of your "
    "subscription type. Please choose the proper subscription http://openweathermap.org/price"
)
REVERSE_RADIUS_KM = 50.0
"""How far from a gazetteer place its name (reverse geocoding) and its weather reach."""
MAX_LIMIT = 5
_KELVIN = 273.15
_MPH_PER_MS = 2.2369362920544
_EARTH_RADIUS_KM = 6371.0

Units = Literal["standard", "metric", "imperial"]


@dataclass(frozen=True)
class Conditions:
    """One place's weather today, in standard units (kelvin, metres per second)."""

    temp: float
    feels_like: float
    dew_point: float
    low: float
    high: float
    pressure: int
    humidity: int
    clouds: int
    visibility: int
    uvi: float
    wind_speed: float
    wind_deg: int
    wind_gust: float
    weather_id: int
    main: str
    description: str
    icon: str
    summary: str
    pop: float
    rain: float | None = None  # mm/h now and mm over the day, when it rains
    snow: float | None = None


@dataclass(frozen=True)
class Place:
    """A gazetteer entry: what geocoding answers, and where its weather applies."""

    name: str
    lat: float
    lon: float
    country: str
    timezone: str
    timezone_offset: int
    conditions: Conditions
    state: str | None = None
    state_code: str | None = None  # ISO 3166-2 subdivision, matched in `q` for US places
    local_names: tuple[tuple[str, str], ...] = ()

    def geocoded(self) -> dict[str, Any]:
        """The place as both geocoding routes return it."""
        entry: dict[str, Any] = {"name": self.name}
        if self.local_names:
            entry["local_names"] = dict(self.local_names)
        entry |= {"lat": self.lat, "lon": self.lon, "country": self.country}
        if self.state is not None:
            entry["state"] = self.state
        return entry


# Figures chosen so that none rounds on a .5 in any unit: tests compare whole numbers.
GAZETTEER: tuple[Place, ...] = (
    Place(
        name="London",
        local_names=(("en", "London"), ("fr", "Londres"), ("de", "London"), ("es", "Londres")),
        lat=51.5073219,
        lon=-0.1276474,
        country="GB",
        state="England",
        timezone="Europe/London",
        timezone_offset=0,
        conditions=Conditions(
            temp=283.75,  # 10.6 °C, 51.08 °F
            feels_like=282.95,
            dew_point=279.35,
            low=280.95,  # 7.8 °C, 46.04 °F
            high=285.15,  # 12 °C, 53.6 °F
            pressure=1012,
            humidity=74,
            clouds=100,
            visibility=10000,
            uvi=1.2,
            wind_speed=4.6,  # 16.56 km/h, 10.29 mph
            wind_deg=240,
            wind_gust=8.2,
            weather_id=804,
            main="Clouds",
            description="overcast clouds",
            icon="04d",
            summary="Expect a day of cloudy skies",
            pop=0.1,
        ),
    ),
    Place(
        name="Paris",
        local_names=(("en", "Paris"), ("fr", "Paris"), ("de", "Paris"), ("it", "Parigi")),
        lat=48.8588897,
        lon=2.3200410217200766,
        country="FR",
        state="Ile-de-France",
        timezone="Europe/Paris",
        timezone_offset=3600,
        conditions=Conditions(
            temp=285.35,  # 12.2 °C, 53.96 °F
            feels_like=284.65,
            dew_point=282.15,
            low=281.45,  # 8.3 °C, 46.94 °F
            high=287.55,  # 14.4 °C, 57.92 °F
            pressure=1009,
            humidity=88,
            clouds=90,
            visibility=8000,
            uvi=0.8,
            wind_speed=4.1,  # 14.76 km/h, 9.17 mph
            wind_deg=200,
            wind_gust=7.4,
            weather_id=500,
            main="Rain",
            description="light rain",
            icon="10d",
            summary="Expect a day of partly cloudy with rain",
            pop=0.8,
            rain=0.42,
        ),
    ),
    Place(
        name="Springfield",
        lat=39.7990175,
        lon=-89.6439575,
        country="US",
        state="Illinois",
        state_code="IL",
        timezone="America/Chicago",
        timezone_offset=-18000,
        conditions=Conditions(
            temp=295.15,  # 22 °C, 71.6 °F
            feels_like=295.05,
            dew_point=285.85,
            low=289.25,  # 16.1 °C, 60.98 °F
            high=299.85,  # 26.7 °C, 80.06 °F
            pressure=1018,
            humidity=55,
            clouds=0,
            visibility=10000,
            uvi=6.4,
            wind_speed=3.6,  # 12.96 km/h, 8.05 mph
            wind_deg=180,
            wind_gust=5.1,
            weather_id=800,
            main="Clear",
            description="clear sky",
            icon="01d",
            summary="There will be clear sky today",
            pop=0.0,
        ),
    ),
    Place(
        name="London",
        local_names=(("en", "London"), ("fr", "London")),
        lat=42.9832406,
        lon=-81.243372,
        country="CA",
        state="Ontario",
        timezone="America/Toronto",
        timezone_offset=-18000,
        conditions=Conditions(
            temp=271.45,  # -1.7 °C, 28.94 °F
            feels_like=267.15,
            dew_point=269.35,
            low=268.75,  # -4.4 °C, 24.08 °F
            high=273.35,  # 0.2 °C, 32.36 °F
            pressure=1021,
            humidity=86,
            clouds=100,
            visibility=3000,
            uvi=0.5,
            wind_speed=5.8,  # 20.88 km/h, 12.97 mph
            wind_deg=320,
            wind_gust=9.9,
            weather_id=600,
            main="Snow",
            description="light snow",
            icon="13d",
            summary="Expect a day of snow",
            pop=0.9,
            snow=0.6,
        ),
    ),
    Place(
        name="Springfield",
        lat=37.2081729,
        lon=-93.2922715,
        country="US",
        state="Missouri",
        state_code="MO",
        timezone="America/Chicago",
        timezone_offset=-18000,
        conditions=Conditions(
            temp=297.05,  # 23.9 °C, 75.02 °F
            feels_like=297.25,
            dew_point=289.15,
            low=291.15,  # 18 °C, 64.4 °F
            high=301.45,  # 28.3 °C, 82.94 °F
            pressure=1015,
            humidity=62,
            clouds=40,
            visibility=10000,
            uvi=7.1,
            wind_speed=2.9,  # 10.44 km/h, 6.49 mph
            wind_deg=160,
            wind_gust=4.4,
            weather_id=802,
            main="Clouds",
            description="scattered clouds",
            icon="03d",
            summary="You can expect partly cloudy in the morning, with clearing in the afternoon",
            pop=0.2,
        ),
    ),
)

ELSEWHERE = Conditions(
    temp=288.15,  # 15 °C, 59 °F
    feels_like=287.45,
    dew_point=280.15,
    low=284.15,  # 11 °C, 51.8 °F
    high=291.15,  # 18 °C, 64.4 °F
    pressure=1013,
    humidity=60,
    clouds=20,
    visibility=10000,
    uvi=3.0,
    wind_speed=3.0,  # 10.8 km/h, 6.71 mph
    wind_deg=90,
    wind_gust=4.0,
    weather_id=801,
    main="Clouds",
    description="few clouds",
    icon="02d",
    summary="There will be partly cloudy today",
    pop=0.0,
)
"""The weather of every point that is not near a gazetteer place."""


def create_app(state: StubState) -> Starlette:
    """Build the One Call 3.0 and Geocoding app around ``state``."""

    async def gate(request: Request) -> Response | None:
        """The key check and the configured behaviour every route goes through first."""
        appid = request.query_params.get("appid", "")
        expected = state.api_key
        if not appid or (
            expected is not None and not secrets.compare_digest(appid.encode(), expected.encode())
        ):
            return _error(401, INVALID_KEY_MESSAGE)
        await pause(request, state.behaviour.latency)
        status = state.take_failure()
        if status is not None:
            return _failure(status)
        if state.behaviour.reply is not None:
            return Response(state.behaviour.reply, media_type="application/json")
        return None

    async def one_call(request: Request) -> Response:
        refused = await gate(request)
        if refused is not None:
            return refused
        point = _coordinates(request)
        if isinstance(point, Response):
            return point
        lat, lon = point
        units = request.query_params.get("units", "standard")
        excluded = {part.strip() for part in request.query_params.get("exclude", "").split(",")}
        return JSONResponse(_forecast(lat, lon, _units(units), excluded))

    async def direct(request: Request) -> Response:
        refused = await gate(request)
        if refused is not None:
            return refused
        query = request.query_params.get("q", "").strip()
        if not query:
            return _error(400, "Nothing to geocode")
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        return JSONResponse([place.geocoded() for place in _named(query)][:limit])

    async def reverse(request: Request) -> Response:
        refused = await gate(request)
        if refused is not None:
            return refused
        point = _coordinates(request)
        if isinstance(point, Response):
            return point
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        return JSONResponse([place.geocoded() for place in _near(*point)][:limit])

    return build_app(
        state,
        [
            Route("/data/3.0/onecall", one_call, methods=["GET"]),
            Route("/geo/1.0/direct", direct, methods=["GET"]),
            Route("/geo/1.0/reverse", reverse, methods=["GET"]),
        ],
    )


def _units(value: str) -> Units:
    """The unit system asked for; the real API answers an unknown one in standard units."""
    if value == "metric":
        return "metric"
    if value == "imperial":
        return "imperial"
    return "standard"


def _coordinates(request: Request) -> tuple[float, float] | Response:
    """``lat`` and ``lon`` as numbers in range, or the 400 the real API answers."""
    raw_lat, raw_lon = request.query_params.get("lat"), request.query_params.get("lon")
    if not raw_lat or not raw_lon:
        return _error(400, "Nothing to geocode")
    lat, lon = _number(raw_lat), _number(raw_lon)
    if lat is None or not -90 <= lat <= 90:
        return _error(400, "wrong latitude")
    if lon is None or not -180 <= lon <= 180:
        return _error(400, "wrong longitude")
    return lat, lon


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _limit(request: Request) -> int | Response:
    raw = request.query_params.get("limit")
    if raw is None:
        return MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        return _error(400, "wrong limit")
    if limit < 1:
        return _error(400, "wrong limit")
    return min(limit, MAX_LIMIT)


def _named(query: str) -> list[Place]:
    """Gazetteer places matching ``{city name},{state code},{country code}``.

    With two parts the second is the country code; a state code only ever matches US
    places, which are the only ones that have one.
    """
    parts = [part.strip().casefold() for part in query.split(",")]
    city = parts[0]
    country = parts[-1] if len(parts) >= 2 else None
    state_code = parts[1] if len(parts) >= 3 else None
    return [
        place
        for place in GAZETTEER
        if city in {place.name.casefold(), *(name.casefold() for _, name in place.local_names)}
        and (country is None or country == place.country.casefold())
        and (state_code is None or state_code == (place.state_code or "").casefold())
    ]


def _near(lat: float, lon: float) -> list[Place]:
    """Gazetteer places within ``REVERSE_RADIUS_KM`` of the point, nearest first."""
    distances = [(_distance_km(lat, lon, place.lat, place.lon), place) for place in GAZETTEER]
    return [
        place
        for distance, place in sorted(distances, key=lambda pair: pair[0])
        if distance <= REVERSE_RADIUS_KM
    ]


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def _forecast(lat: float, lon: float, units: Units, excluded: set[str]) -> dict[str, Any]:
    """The One Call answer for a point: its nearest place's weather, or ``ELSEWHERE``."""
    nearby = _near(lat, lon)
    place = nearby[0] if nearby else None
    conditions = place.conditions if place is not None else ELSEWHERE
    offset = place.timezone_offset if place is not None else 0

    def temp(kelvin: float) -> float:
        if units == "metric":
            return round(kelvin - _KELVIN, 2)
        if units == "imperial":
            return round((kelvin - _KELVIN) * 9 / 5 + 32, 2)
        return round(kelvin, 2)

    def speed(metres_per_second: float) -> float:
        factor = _MPH_PER_MS if units == "imperial" else 1.0
        return round(metres_per_second * factor, 2)

    c = conditions
    weather = [{"id": c.weather_id, "main": c.main, "description": c.description, "icon": c.icon}]
    now = int(time.time())
    local_midnight = now - (now + offset) % 86400
    sunrise, sunset = local_midnight + 6 * 3600, local_midnight + 19 * 3600
    shared = {
        "pressure": c.pressure,
        "humidity": c.humidity,
        "dew_point": temp(c.dew_point),
        "uvi": c.uvi,
        "clouds": c.clouds,
    }
    wind = {
        "wind_speed": speed(c.wind_speed),
        "wind_deg": c.wind_deg,
        "wind_gust": speed(c.wind_gust),
    }
    precipitation_now = {
        name: {"1h": amount}
        for name, amount in (("rain", c.rain), ("snow", c.snow))
        if amount is not None
    }
    current = (
        {"dt": now, "sunrise": sunrise, "sunset": sunset, "temp": temp(c.temp)}
        | {"feels_like": temp(c.feels_like)}
        | shared
        | {"visibility": c.visibility}
        | wind
        | {"weather": weather}
        | precipitation_now
    )
    hour = now - now % 3600
    hourly = [
        {"dt": hour + index * 3600, "temp": temp(c.temp), "feels_like": temp(c.feels_like)}
        | shared
        | {"visibility": c.visibility}
        | wind
        | {"weather": weather, "pop": c.pop}
        | precipitation_now
        for index in range(48)
    ]
    minute = now - now % 60
    minutely = [
        {"dt": minute + index * 60, "precipitation": c.rain or c.snow or 0} for index in range(61)
    ]
    day_temps = {
        "day": temp(c.temp),
        "min": temp(c.low),
        "max": temp(c.high),
        "night": temp(c.low),
        "eve": temp(c.temp),
        "morn": temp(c.low),
    }
    feels = {
        "day": temp(c.feels_like),
        "night": temp(c.low),
        "eve": temp(c.feels_like),
        "morn": temp(c.low),
    }
    precipitation_day = {
        name: amount for name, amount in (("rain", c.rain), ("snow", c.snow)) if amount is not None
    }
    daily = [
        {
            "dt": local_midnight + index * 86400 + 12 * 3600,
            "sunrise": sunrise + index * 86400,
            "sunset": sunset + index * 86400,
            "moonrise": sunrise + index * 86400 + 4 * 3600,
            "moonset": sunset + index * 86400 - 4 * 3600,
            "moon_phase": round((0.16 + index / 29.53) % 1, 2),
            "summary": c.summary,
            "temp": day_temps,
            "feels_like": feels,
        }
        | shared
        | wind
        | {"weather": weather, "pop": c.pop}
        | precipitation_day
        for index in range(8)
    ]
    answer: dict[str, Any] = {
        "lat": round(lat, 4),
        "lon": round(lon, 4),
        "timezone": place.timezone if place is not None else "Etc/GMT",
        "timezone_offset": offset,
    }
    parts = {"current": current, "minutely": minutely, "hourly": hourly, "daily": daily}
    answer |= {name: part for name, part in parts.items() if name not in excluded}
    return answer


def _failure(status: int) -> Response:
    """OpenWeatherMap's answer for a configured failure status."""
    if status == 401:
        return _error(401, INVALID_KEY_MESSAGE)
    if status == 429:
        return _error(429, RATE_LIMIT_MESSAGE)
    return _error(status, reason_phrase(status))


def _error(status: int, message: str) -> Response:
    # The real API is inconsistent: `cod` is a number in its 401 and 429 bodies and a
    # string in the others ("400", "404", ...); the stub answers the same way.
    cod: int | str = status if status in (401, 429) else str(status)
    return JSONResponse({"cod": cod, "message": message}, status_code=status)
