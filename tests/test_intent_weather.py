"""The weather intent against the OpenWeatherMap stub running as a real process: what it
asks OpenWeatherMap (read back from the stub's request log), what it says, and how each
failure reaches the user, without the realm's key ever showing.

The expected figures are the stub's fixed data set (rentahal.testing.stubs.openweathermap)
converted by hand: Paris is 285.35 K now (12.2 °C, 53.96 °F), 287.55 K at most and 281.45 K
at least, with 4.1 m/s of wind (14.76 km/h, 9.17 mph), and so on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from rentahal.config import Settings, load_settings
from rentahal.core.errors import ErrorCode
from rentahal.core.specs import QuerySpec
from rentahal.intents import Answer, IntentCall, IntentError, Location, Units
from rentahal.intents.weather import Forecast, WeatherIntent, summary
from rentahal.net import free_port
from rentahal.store import Query, Role, Store, User
from rentahal.testing.process import StubServer

KEY = "owm_realm_key_5e0c1d2b3a49"
WRONG_KEY = "owm_revoked_key_77aa88bb99"
PARIS = Location(lat=48.8566, lon=2.3522)  # the browser's fix, a few km from the gazetteer's
SPRINGFIELD_IL = Location(lat=39.80, lon=-89.64)
OPEN_SEA = Location(lat=0.0, lon=-30.0)  # no place within reach: nameless, default weather
ONE_CALL = "/data/3.0/onecall"
DIRECT = "/geo/1.0/direct"
REVERSE = "/geo/1.0/reverse"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def owm_stub() -> AsyncIterator[StubServer]:
    async with StubServer("openweathermap", api_key=KEY) as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def stub(owm_stub: StubServer) -> StubServer:
    await owm_stub.reset()
    return owm_stub


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weather")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def store(data_dir: Path) -> AsyncIterator[Store]:
    store = await Store(load_settings(data_dir=data_dir).resolved_database_url).open()
    yield store
    await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def user(store: Store) -> User:
    return await store.users.create(role=Role.USER, nickname="rain_watcher")


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


class Asker:
    """Builds each test's `IntentCall` the way the broker would, for one realm's settings."""

    def __init__(
        self, data_dir: Path, store: Store, user: User, http: httpx.AsyncClient, endpoint: str
    ) -> None:
        self.data_dir, self.store, self.user, self.http = data_dir, store, user, http
        self.endpoint = endpoint

    def settings(self, **fields: Any) -> Settings:
        values: dict[str, Any] = {
            "openweathermap_endpoint": self.endpoint,
            "openweathermap_api_key": KEY,
        } | fields
        return load_settings(data_dir=self.data_dir, **values)

    async def ask(
        self,
        text: str = "",
        *,
        location: Location | None = None,
        units: Units = "metric",
        intent: WeatherIntent | None = None,
        settings: Settings | None = None,
    ) -> str:
        call = IntentCall(
            text=text,
            utterance=f"weather {text}".strip(),
            user=self.user,
            speak=True,
            units=units,
            location=location,
            image=None,
            settings=settings if settings is not None else self.settings(),
            store=self.store,
            http=self.http,
            secret_key="broker-secret-not-used-by-weather",
            submit_query=_no_queries,
        )
        answer = await (intent or WeatherIntent()).handle(call)
        assert isinstance(answer, Answer)
        return answer.text

    async def refused(self, text: str = "", **options: Any) -> IntentError:
        with pytest.raises(IntentError) as caught:
            await self.ask(text, **options)
        return caught.value


async def _no_queries(spec: QuerySpec) -> tuple[Query, int]:
    pytest.fail(f"the weather intent queued a query: {spec}")


@pytest.fixture
def asker(
    data_dir: Path, store: Store, user: User, http: httpx.AsyncClient, stub: StubServer
) -> Asker:
    return Asker(data_dir, store, user, http, stub.url)


async def requests_to(stub: StubServer, path: str) -> list[dict[str, str]]:
    return [r["query"] for r in await stub.requests() if r["path"] == path]


def assert_key_hidden(error: IntentError, key: str) -> None:
    """Not in the message, nor in any exception the error carries."""
    seen: BaseException | None = error
    while seen is not None:
        assert key not in str(seen) and key not in repr(seen)
        seen = seen.__cause__ or seen.__context__


# --- where ----------------------------------------------------------------------------


async def test_the_browsers_location_is_named_by_reverse_geocoding(
    asker: Asker, stub: StubServer
) -> None:
    text = await asker.ask(location=PARIS)

    assert text == (
        "In Paris it is 12 degrees Celsius with light rain. Today's high is 14 and the low "
        "is 8. The wind is 15 kilometres per hour."
    )
    [one_call] = await requests_to(stub, ONE_CALL)
    assert one_call == {
        "lat": "48.8566",
        "lon": "2.3522",
        "exclude": "minutely,hourly,alerts",
        "units": "metric",
        "appid": KEY,
    }
    [reverse] = await requests_to(stub, REVERSE)
    assert reverse == {"lat": "48.8566", "lon": "2.3522", "limit": "1", "appid": KEY}
    assert await requests_to(stub, DIRECT) == []


async def test_the_forecast_and_the_place_name_are_asked_for_at_once(
    asker: Asker, stub: StubServer
) -> None:
    await stub.configure(latency=0.5)

    await asker.ask(location=PARIS)

    # Asked one after the other, the second would arrive half a second after the first.
    arrivals = sorted(r["time"] for r in await stub.requests())
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] < 0.25


async def test_a_place_out_of_the_geocoders_reach_is_where_you_are(
    asker: Asker, stub: StubServer
) -> None:
    text = await asker.ask(location=OPEN_SEA)

    assert text == (
        "Where you are it is 15 degrees Celsius with few clouds. Today's high is 18 and the "
        "low is 11. The wind is 11 kilometres per hour."
    )


async def test_a_named_place_is_geocoded_and_wins_over_the_browsers_location(
    asker: Asker, stub: StubServer
) -> None:
    text = await asker.ask("in Paris", location=SPRINGFIELD_IL)

    assert text.startswith("In Paris it is 12 degrees Celsius with light rain.")
    assert await requests_to(stub, DIRECT) == [{"q": "Paris", "limit": "1", "appid": KEY}]
    [one_call] = await requests_to(stub, ONE_CALL)
    assert (one_call["lat"], one_call["lon"]) == ("48.8588897", "2.3200410217200766")
    assert await requests_to(stub, REVERSE) == []


@pytest.mark.parametrize(
    ("text", "query", "expected"),
    [
        ("in Springfield, MO, US", "Springfield,MO,US", "In Springfield it is 24 degrees"),
        ("what's the weather like in London, CA today?", "London,CA", "In London it is -2 "),
        ("Paris", "Paris", "In Paris it is 12 degrees"),
    ],
)
async def test_the_place_is_cut_out_of_the_words(
    asker: Asker, stub: StubServer, text: str, query: str, expected: str
) -> None:
    assert (await asker.ask(text)).startswith(expected)
    assert [q["q"] for q in await requests_to(stub, DIRECT)] == [query]


async def test_without_a_place_the_realms_default_location_is_used(
    asker: Asker, stub: StubServer
) -> None:
    settings = asker.settings(weather_default_location="London,CA")

    text = await asker.ask("like today", settings=settings)

    assert text == (
        "In London it is -2 degrees Celsius with light snow. Today's high is 0 and the low "
        "is -4. The wind is 21 kilometres per hour."
    )
    assert await requests_to(stub, DIRECT) == [{"q": "London,CA", "limit": "1", "appid": KEY}]


async def test_nowhere_to_look_asks_for_the_location_or_a_default(
    asker: Asker, stub: StubServer
) -> None:
    error = await asker.refused("what's the weather like")

    assert error.code == ErrorCode.INVALID
    assert "location" in error.message and "sysop" in error.message
    assert await stub.requests() == []


async def test_an_unknown_place_is_not_found(asker: Asker, stub: StubServer) -> None:
    error = await asker.refused("in Atlantis")

    assert error.code == ErrorCode.NOT_FOUND
    assert "Atlantis" in error.message
    assert await requests_to(stub, ONE_CALL) == []


async def test_an_unknown_default_location_is_the_sysops_to_fix(
    asker: Asker, stub: StubServer
) -> None:
    error = await asker.refused(settings=asker.settings(weather_default_location="Atlantis,GR"))

    assert error.code == ErrorCode.NOT_FOUND
    assert "Atlantis,GR" in error.message and "sysop" in error.message


# --- units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        (
            "metric",
            "In London it is 11 degrees Celsius with overcast clouds. Today's high is 12 and "
            "the low is 8. The wind is 17 kilometres per hour.",
        ),
        (
            "imperial",
            "In London it is 51 degrees Fahrenheit with overcast clouds. Today's high is 54 "
            "and the low is 46. The wind is 10 miles per hour.",
        ),
    ],
)
async def test_the_users_units(asker: Asker, stub: StubServer, units: Units, expected: str) -> None:
    assert await asker.ask("in London, GB", units=units) == expected
    [one_call] = await requests_to(stub, ONE_CALL)
    assert one_call["units"] == units


async def test_imperial_at_the_browsers_location(asker: Asker, stub: StubServer) -> None:
    text = await asker.ask(location=SPRINGFIELD_IL, units="imperial")

    assert text == (
        "In Springfield it is 72 degrees Fahrenheit with clear sky. Today's high is 80 and "
        "the low is 61. The wind is 8 miles per hour."
    )


# --- the key --------------------------------------------------------------------------


async def test_without_a_key_the_intent_is_unavailable_and_asks_nothing(
    asker: Asker, stub: StubServer
) -> None:
    for missing in (None, SecretStr(""), SecretStr("  ")):
        settings = asker.settings().model_copy(update={"openweathermap_api_key": missing})
        assert not WeatherIntent().available(settings)

        error = await asker.refused("in Paris", location=PARIS, settings=settings)

        assert error.code == ErrorCode.NOT_CONFIGURED
    assert WeatherIntent().available(asker.settings())
    assert await stub.requests() == []


@pytest.mark.parametrize("where", ["named", "located"])
async def test_a_refused_key_is_reported_without_the_key(
    asker: Asker, stub: StubServer, where: str
) -> None:
    settings = asker.settings(openweathermap_api_key=WRONG_KEY)
    text, location = ("in Paris", None) if where == "named" else ("", PARIS)

    with capture_logs() as logs:
        error = await asker.refused(text, location=location, settings=settings)

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert "key" in error.message and "refused" in error.message
    assert_key_hidden(error, WRONG_KEY)
    assert any(entry.get("status") == 401 for entry in logs)
    assert WRONG_KEY not in repr(logs)
    assert {q["appid"] for q in (r["query"] for r in await stub.requests())} == {WRONG_KEY}


# --- upstream failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [(429, "busy"), (500, "HTTP 500"), (503, "HTTP 503")],
)
async def test_an_upstream_error_status(
    asker: Asker, stub: StubServer, status: int, words: str
) -> None:
    await stub.configure(fail_status=status)

    error = await asker.refused(location=PARIS)

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert words in error.message
    assert_key_hidden(error, KEY)


@pytest.mark.parametrize("body", ["{not json", '{"cod": 200}', "[]", ""])
async def test_an_unreadable_answer(asker: Asker, stub: StubServer, body: str) -> None:
    await stub.configure(reply=body)

    error = await asker.refused(location=PARIS)

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert "could not be read" in error.message


async def test_an_unreadable_geocoding_answer(asker: Asker, stub: StubServer) -> None:
    await stub.configure(reply='{"name": "Paris"}')

    error = await asker.refused("in Paris")

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert "geocoding" in error.message
    assert await requests_to(stub, ONE_CALL) == []


async def test_a_slow_upstream_times_out(asker: Asker, stub: StubServer) -> None:
    await stub.configure(latency=30)

    error = await asker.refused(location=PARIS, intent=WeatherIntent(timeout=0.3))

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert "did not answer within 0.3 seconds" in error.message
    assert_key_hidden(error, KEY)


async def test_an_unreachable_upstream(asker: Asker) -> None:
    settings = asker.settings(openweathermap_endpoint=f"http://127.0.0.1:{free_port()}")

    error = await asker.refused("in Paris", settings=settings)

    assert error.code == ErrorCode.UPSTREAM_ERROR
    assert "could not be reached" in error.message
    assert_key_hidden(error, KEY)


# --- the stub itself ------------------------------------------------------------------


async def test_the_stub_answers_like_openweathermap(stub: StubServer) -> None:
    async with httpx.AsyncClient(base_url=stub.url, trust_env=False) as client:
        standard = (await client.get(ONE_CALL, params={"lat": 51.5, "lon": 0, "appid": KEY})).json()
        no_key = await client.get(ONE_CALL, params={"lat": 51.5, "lon": 0})
        bad_lat = await client.get(ONE_CALL, params={"lat": "north", "lon": 0, "appid": KEY})
        bad_lon = await client.get(REVERSE, params={"lat": 1, "lon": 181, "appid": KEY})
        nothing = await client.get(DIRECT, params={"appid": KEY})

    assert standard["current"]["temp"] == 283.75  # kelvin when no units are given
    assert {"current", "minutely", "hourly", "daily"} <= standard.keys()
    assert len(standard["daily"]) == 8 and len(standard["hourly"]) == 48
    assert (no_key.status_code, no_key.json()["cod"]) == (401, 401)
    assert no_key.json()["message"].startswith("Invalid API key.")
    assert (bad_lat.status_code, bad_lat.json()) == (
        400,
        {"cod": "400", "message": "wrong latitude"},
    )
    assert (bad_lon.status_code, bad_lon.json()["message"]) == (400, "wrong longitude")
    assert (nothing.status_code, nothing.json()["message"]) == (400, "Nothing to geocode")


# --- the sentence ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temp", "high", "low", "expected"),
    [
        (
            12.5,
            14.5,
            -2.5,
            "it is 13 degrees Celsius with mist. Today's high is 15 and the low is -2.",
        ),
        (0.6, 1.4, -0.4, "it is 1 degree Celsius with mist. Today's high is 1 and the low is 0."),
    ],
)
def test_temperatures_are_rounded_half_up_and_spoken_as_words_read(
    temp: float, high: float, low: float, expected: str
) -> None:
    forecast = Forecast.model_validate(
        {
            "current": {"temp": temp, "weather": [{"description": "mist"}]},
            "daily": [{"temp": {"min": low, "max": high}}],
        }
    )

    assert summary("Oslo", forecast, "metric") == f"In Oslo {expected}"
