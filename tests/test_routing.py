"""Routing: strategies, the circuit breaker, realms, pools and the router (pure, no I/O)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rentahal.backends.base import Backend, Endpoint
from rentahal.routing.circuit import CircuitBreaker, CircuitState
from rentahal.routing.pools import PoolState, specialists
from rentahal.routing.realms import RealmTable
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.router import Router
from rentahal.routing.strategies import Chooser, auto_strategy, load
from rentahal.store.models import Realm


def worker(
    name: str,
    *,
    health: float = 100.0,
    in_flight: int = 0,
    slots: int = 1,
    latency: float | None = None,
    caps: frozenset[str] = frozenset({"chat"}),
    models: tuple[str, ...] = (),
    realm: str = "",
    blacklisted: bool = False,
    specializations: dict[str, list[str]] | None = None,
) -> WorkerState:
    w = WorkerState(
        name=name,
        address=f"{name}:8000",
        kind="ollama",
        capabilities=caps,
        models=models,
        max_concurrency=slots,
        health_score=health,
        blacklisted=blacklisted,
        last_active=None,
        realm=realm,
    )
    w.in_flight = in_flight
    w.ewma_latency = latency
    if specializations is not None:
        w.specializations = specializations
    return w


def names(workers) -> list[str]:
    return [w.name for w in workers]


# --- strategies -------------------------------------------------------------------------


def test_load_is_in_flight_per_slot() -> None:
    assert load(worker("a", in_flight=2, slots=8)) == 0.25
    assert load(worker("b", in_flight=1, slots=2)) == 0.5


def test_choose_without_candidates_raises() -> None:
    with pytest.raises(ValueError):
        Chooser().choose("k", "health", [])


def test_health_picks_highest_score() -> None:
    ws = [worker("a", health=50), worker("b", health=90), worker("c", health=70)]
    assert Chooser().choose("k", "health", ws).name == "b"


def test_health_ties_go_to_lower_load() -> None:
    ws = [
        worker("a", health=90, in_flight=1, slots=2),
        worker("b", health=90, in_flight=1, slots=4),
        worker("c", health=80, in_flight=0, slots=4),
    ]
    assert Chooser().choose("k", "health", ws).name == "b"


def test_unknown_strategy_falls_back_to_health() -> None:
    ws = [worker("a", health=50), worker("b", health=90), worker("c", health=70)]
    assert Chooser().choose("k", "no-such-strategy", ws).name == "b"
    assert Chooser().choose("k", "", ws).name == "b"


def test_round_robin_cycles_in_name_order() -> None:
    ws = [worker("c"), worker("a"), worker("b")]
    chooser = Chooser()
    picks = [chooser.choose("$P", "round_robin", ws).name for _ in range(7)]
    assert picks == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_counter_is_per_key() -> None:
    pool1 = [worker("a"), worker("b"), worker("c")]
    pool2 = [worker("x"), worker("y"), worker("z")]
    chooser = Chooser()
    assert chooser.choose("$ONE", "round_robin", pool1).name == "a"
    assert chooser.choose("$ONE", "round_robin", pool1).name == "b"
    # A second pool starts at its own beginning, not at the first pool's turn.
    assert chooser.choose("$TWO", "round_robin", pool2).name == "x"
    assert chooser.choose("$ONE", "round_robin", pool1).name == "c"
    assert chooser.choose("$TWO", "round_robin", pool2).name == "y"


def test_least_busy_compares_in_flight_per_slot() -> None:
    big = worker("big", in_flight=2, slots=8)  # 0.25
    small = worker("small", in_flight=1, slots=2)  # 0.5
    assert Chooser().choose("k", "least_busy", [small, big]).name == "big"


def test_least_busy_ties_go_to_health_then_name() -> None:
    ws = [worker("b", health=80), worker("a", health=90), worker("c", health=90)]
    assert Chooser().choose("k", "least_busy", ws).name == "a"


def test_random_picks_only_candidates_and_eventually_all() -> None:
    ws = [worker("a"), worker("b"), worker("c"), worker("d")]
    chooser = Chooser(rng=random.Random(1234))
    picks = Counter(chooser.choose("k", "random", ws).name for _ in range(200))
    assert set(picks) == {"a", "b", "c", "d"}


def test_random_is_reproducible_with_a_seeded_rng() -> None:
    ws = [worker("a"), worker("b"), worker("c"), worker("d")]
    c1, c2 = Chooser(rng=random.Random(7)), Chooser(rng=random.Random(7))
    seq1 = [c1.choose("k", "random", ws).name for _ in range(20)]
    seq2 = [c2.choose("k", "random", ws).name for _ in range(20)]
    assert seq1 == seq2


def test_fastest_picks_lowest_ewma_latency() -> None:
    ws = [worker("a", latency=2.0), worker("b", latency=0.5), worker("c", latency=1.0)]
    assert Chooser().choose("k", "fastest", ws).name == "b"


def test_fastest_tries_unmeasured_workers_first() -> None:
    ws = [worker("a", latency=0.1), worker("b", latency=None), worker("c", latency=0.2)]
    assert Chooser().choose("k", "fastest", ws).name == "b"


def test_power_of_two_with_two_candidates_picks_the_less_loaded() -> None:
    busy = worker("busy", in_flight=3, slots=4)
    idle = worker("idle", in_flight=1, slots=4)
    for seed in range(50):
        chooser = Chooser(rng=random.Random(seed))
        assert chooser.choose("k", "power_of_two", [busy, idle]).name == "idle"
        assert chooser.choose("k", "power_of_two", [idle, busy]).name == "idle"


def test_power_of_two_never_picks_the_most_loaded_of_three_or_more() -> None:
    ws = [
        worker("a", in_flight=0, slots=4),
        worker("b", in_flight=1, slots=4),
        worker("c", in_flight=2, slots=4),
        worker("d", in_flight=4, slots=4),
    ]
    chooser = Chooser(rng=random.Random(99))
    picks = Counter(chooser.choose("k", "power_of_two", ws).name for _ in range(300))
    assert "d" not in picks
    # It samples two, so it does not always pick the globally least loaded.
    assert set(picks) == {"a", "b", "c"}


def test_power_of_two_with_one_candidate() -> None:
    only = worker("only", in_flight=1)
    assert Chooser(rng=random.Random(0)).choose("k", "power_of_two", [only]) is only


# --- auto -------------------------------------------------------------------------------


def healths(*scores: float) -> list[WorkerState]:
    return [worker(f"w{i}", health=s) for i, s in enumerate(scores)]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        # Two or fewer candidates: always by health, however low or uneven.
        ((10,), "health"),
        ((10, 20), "health"),
        ((0, 100), "health"),
        ((100, 100), "health"),
        # Uneven health (population variance > 400) goes by health, even if mean is low.
        ((58, 60, 98, 100), "health"),  # mean 79, variance exactly 401
        ((59, 59, 99, 99), "round_robin"),  # mean 79, variance exactly 400
        ((0, 50, 60), "health"),  # mean < 70 but variance ~689
        ((40, 40, 80, 80), "least_busy"),  # variance exactly 400, mean 60
        ((39, 41, 79, 81), "health"),  # variance exactly 401, mean 60
        # Stressed pool: mean < 70.
        ((69, 70, 70), "least_busy"),  # mean 69.67
        ((70, 70, 70), "round_robin"),  # mean exactly 70
        ((69.9, 69.9, 69.9), "least_busy"),
        # Healthy, even pool takes turns.
        ((100, 100, 100), "round_robin"),
        ((90, 95, 100, 85), "round_robin"),
    ],
)
def test_auto_strategy_thresholds(scores: tuple[float, ...], expected: str) -> None:
    assert auto_strategy(healths(*scores)) == expected


def test_choose_auto_applies_the_auto_rule() -> None:
    chooser = Chooser()
    # Even, healthy pool of 3 → round robin in name order.
    even = healths(100, 100, 100)
    assert [chooser.choose("k", "auto", even).name for _ in range(4)] == ["w0", "w1", "w2", "w0"]
    # Stressed → least busy.
    stressed = healths(60, 60, 60)
    stressed[0].in_flight = 1
    stressed[1].in_flight = 1
    assert chooser.choose("k2", "auto", stressed).name == "w2"
    # Two candidates → health.
    assert chooser.choose("k3", "auto", healths(40, 50)).name == "w1"


# --- circuit breaker --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(threshold=5, open_seconds=30.0, clock=clock)


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.on_failure()
    assert breaker.state is CircuitState.OPEN


def test_closed_circuit_allows(breaker: CircuitBreaker) -> None:
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows()
    breaker.on_dispatch()  # dispatching in closed state changes nothing
    assert breaker.allows()


def test_fifth_consecutive_failure_opens(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        breaker.on_failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows()
    breaker.on_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allows()


def test_open_refuses_until_open_seconds_pass(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(29.9)
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allows()
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allows()


def test_half_open_allows_exactly_one_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(30)
    assert breaker.allows()
    breaker.on_dispatch()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allows()
    clock.advance(1000)  # still one probe at a time, however long it takes
    assert not breaker.allows()


def test_probe_success_closes_and_resets_failures(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_it(breaker)
    clock.advance(30)
    breaker.on_dispatch()
    breaker.on_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows()
    # The count starts again: 4 failures do not re-open it, the 5th does.
    for _ in range(4):
        breaker.on_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.on_failure()
    assert breaker.state is CircuitState.OPEN


def test_probe_failure_reopens_for_another_period(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_it(breaker)
    clock.advance(30)
    breaker.on_dispatch()
    breaker.on_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allows()
    clock.advance(29)
    assert not breaker.allows()
    clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allows()  # a new probe may go


def test_a_passed_health_check_lets_the_probe_go_at_once(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.on_healthy()  # closed: nothing to change
    assert breaker.state is CircuitState.CLOSED
    open_it(breaker)
    clock.advance(1)
    breaker.on_healthy()  # e.g. a worker restarted after a crash failed all its jobs
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.on_dispatch()
    assert not breaker.allows()  # still one job first, not its whole share
    breaker.on_failure()  # the probe failed: open for the full period again
    assert breaker.state is CircuitState.OPEN
    clock.advance(29.9)
    assert not breaker.allows()


def test_success_in_closed_state_resets_consecutive_count(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        breaker.on_failure()
    breaker.on_success()
    for _ in range(4):
        breaker.on_failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows()
    breaker.on_failure()
    assert breaker.state is CircuitState.OPEN


def test_worker_with_open_circuit_is_alive_but_not_available(
    breaker: CircuitBreaker,
) -> None:
    w = worker("a")
    w.circuit = breaker
    assert w.available
    open_it(breaker)
    assert w.alive
    assert not w.available


# --- what a backend is handed -----------------------------------------------------------


def test_a_worker_s_endpoint_is_its_address_and_models_not_its_live_state() -> None:
    w = worker("a", models=("llama3", "mistral"), in_flight=1, health=40.0)
    w.address = " 10.0.0.7:11434/ "
    endpoint = w.endpoint
    assert endpoint == Endpoint(
        name="a", kind="ollama", url="http://10.0.0.7:11434", models=("llama3", "mistral")
    )
    w.models = ("phi3",)  # a later health check; the endpoint already handed out stays
    assert endpoint.models == ("llama3", "mistral") and w.endpoint.models == ("phi3",)


def test_the_endpoint_key_is_the_join_key_else_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = worker("a")
    assert w.endpoint.key is None and Backend.auth_headers(w.endpoint) == {}
    w.api_key_env = "RENTAHAL_TEST_ENDPOINT_KEY"
    monkeypatch.delenv(w.api_key_env, raising=False)
    assert w.endpoint.key is None
    monkeypatch.setenv(w.api_key_env, "")
    assert w.endpoint.key is None
    monkeypatch.setenv(w.api_key_env, "sk-from-env")
    assert Backend.auth_headers(w.endpoint) == {"Authorization": "Bearer sk-from-env"}
    w.key = "sk-joined"
    assert Backend.auth_headers(w.endpoint) == {"Authorization": "Bearer sk-joined"}
    assert "sk-joined" not in repr(w.endpoint)


# --- router -----------------------------------------------------------------------------


def realm(name: str, primary: list[str], backup: list[str] | None = None, strategy="health"):
    return Realm(
        name=name,
        primary_for=primary,
        backup_for=backup or [],
        strategy=strategy,
        max_queue_size=100,
        min_workers=0,
        max_workers=10,
    )


def make_router(*workers: WorkerState, clock: FakeClock | None = None) -> Router:
    clock = clock or FakeClock()
    registry = Registry(new_circuit=lambda: CircuitBreaker(threshold=5, clock=clock))
    for w in workers:
        registry.add(w)
    realms = RealmTable()
    realms.load(
        [
            realm("$CHAT", ["chat"]),
            realm("$VISION", ["vision"]),
            realm("$OVERFLOW", [], ["chat"]),
        ]
    )
    router = Router(registry, realms)
    router.pools = {"$FAST": PoolState("$FAST", "chat", ("a", "b"), "round_robin")}
    return router


def test_home_realm_is_the_given_realm_else_the_primary_of_its_type() -> None:
    router = make_router()
    assert router.home_realm(worker("a", realm="$OVERFLOW")) == "$OVERFLOW"
    assert router.home_realm(worker("b")) == "$CHAT"
    assert router.home_realm(worker("c", realm="$NOPE")) == "$CHAT"
    assert router.home_realm(worker("d", caps=frozenset({"vision"}))) == "$VISION"


def test_no_model_goes_to_the_primary_realm() -> None:
    router = make_router(
        worker("over", health=100, realm="$OVERFLOW"),
        worker("c1", health=60),
        worker("c2", health=80, realm="$NOPE"),  # unknown realm → home is $CHAT
    )
    choice = router.select("chat", "")
    assert choice is not None
    assert choice.worker.name == "c2"
    assert choice.realm == "$CHAT"
    assert choice.cross_realm is False


def test_backup_realm_only_when_primary_is_all_busy() -> None:
    c1 = worker("c1", in_flight=2, slots=2)
    c2 = worker("c2", in_flight=1, slots=1)
    router = make_router(c1, c2, worker("over", realm="$OVERFLOW"))
    choice = router.select("chat", "")
    assert choice is not None
    assert choice.worker.name == "over"
    assert choice.realm == "$OVERFLOW"
    assert choice.cross_realm is True
    # A free slot in the primary realm takes the job again.
    c1.in_flight = 1
    choice = router.select("chat", "")
    assert choice is not None
    assert (choice.worker.name, choice.realm, choice.cross_realm) == ("c1", "$CHAT", False)


def test_backup_realm_when_primary_has_no_live_worker() -> None:
    router = make_router(
        worker("c1", blacklisted=True),
        worker("c2", health=0),
        worker("over", realm="$OVERFLOW"),
    )
    choice = router.select("chat", "")
    assert choice is not None
    assert choice.worker.name == "over"
    assert choice.cross_realm is True
    assert router.could_serve("chat", "")


def test_nothing_available_anywhere_selects_none_but_could_serve() -> None:
    router = make_router(worker("c1", in_flight=1), worker("over", in_flight=1, realm="$OVERFLOW"))
    assert router.select("chat", "") is None
    assert router.could_serve("chat", "")


def test_pool_targets_only_its_members() -> None:
    router = make_router(worker("a", health=50), worker("b", health=50), worker("c", health=100))
    picks = [router.select("chat", "$FAST") for _ in range(4)]
    assert all(p is not None for p in picks)
    assert [p.worker.name for p in picks] == ["a", "b", "a", "b"]  # round_robin
    assert all(p.realm == "$CHAT" and not p.cross_realm for p in picks)


def test_pool_with_all_members_busy_does_not_spill_over() -> None:
    router = make_router(worker("a", in_flight=1), worker("b", in_flight=1), worker("c"))
    assert router.select("chat", "$FAST") is None
    assert router.could_serve("chat", "$FAST")


def test_unknown_dollar_name_serves_nothing() -> None:
    router = make_router(worker("a"))
    assert router.select("chat", "$NOPE") is None
    assert not router.could_serve("chat", "$NOPE")


def test_realm_name_targets_that_realms_workers() -> None:
    router = make_router(worker("c1", health=100), worker("over", health=10, realm="$OVERFLOW"))
    choice = router.select("chat", "$OVERFLOW")
    assert choice is not None
    assert choice.worker.name == "over"
    assert choice.realm == "$OVERFLOW"
    assert not choice.cross_realm
    choice = router.select("chat", "$CHAT")
    assert choice is not None
    assert choice.worker.name == "c1"


def test_worker_name_targets_that_worker() -> None:
    router = make_router(worker("a", health=100), worker("b", health=10))
    choice = router.select("chat", "b")
    assert choice is not None
    assert choice.worker.name == "b"
    router.registry.get("b").in_flight = 1
    assert router.select("chat", "b") is None


def test_model_name_targets_workers_listing_it() -> None:
    router = make_router(
        worker("a", health=100, models=("mistral",)),
        worker("b", health=50, models=("llama3:8b", "phi3")),
        worker("c", health=10, models=("phi3",)),
    )
    assert router.select("chat", "phi3").worker.name == "b"
    router.registry.get("b").in_flight = 1
    assert router.select("chat", "phi3").worker.name == "c"
    assert router.select("chat", "gemma") is None
    assert not router.could_serve("chat", "gemma")


def test_untagged_model_matches_latest() -> None:
    router = make_router(worker("a", health=100), worker("b", health=10, models=("llama3:latest",)))
    choice = router.select("chat", "llama3")
    assert choice is not None
    assert choice.worker.name == "b"
    # ...but not a different tag.
    router2 = make_router(worker("b", models=("llama3:8b",)))
    assert router2.select("chat", "llama3") is None


def test_model_in_another_realm_is_found() -> None:
    router = make_router(worker("over", models=("qwen",), realm="$OVERFLOW"), worker("c"))
    choice = router.select("chat", "qwen")
    assert choice is not None
    assert choice.worker.name == "over"


def test_exclude_skips_workers() -> None:
    router = make_router(worker("a", health=100), worker("b", health=50))
    choice = router.select("chat", "", exclude=frozenset({"a"}))
    assert choice is not None
    assert choice.worker.name == "b"
    assert router.select("chat", "", exclude=frozenset({"a", "b"})) is None
    assert not router.could_serve("chat", "", exclude=frozenset({"a", "b"}))
    assert not router.could_serve("chat", "a", exclude=frozenset({"a"}))


def test_blacklisted_workers_are_not_alive() -> None:
    router = make_router(worker("a", blacklisted=True), worker("b", blacklisted=True))
    assert not router.registry.get("a").alive
    assert not router.could_serve("chat", "")
    assert router.select("chat", "") is None
    assert not router.could_serve("chat", "a")


def test_removed_or_zero_health_workers_are_not_alive() -> None:
    router = make_router(worker("a", health=0), worker("b"))
    router.registry.remove("b")
    assert not router.could_serve("chat", "")
    assert router.select("chat", "") is None


def test_open_circuit_counts_for_could_serve_but_select_skips_it() -> None:
    clock = FakeClock()
    router = make_router(worker("a", health=100), worker("b", health=50), clock=clock)
    a = router.registry.get("a")
    for _ in range(5):
        a.circuit.on_failure()
    assert a.alive and not a.available
    assert router.select("chat", "").worker.name == "b"
    router.registry.get("b").blacklisted = True
    assert router.could_serve("chat", "")  # a recovers soon
    assert router.select("chat", "") is None
    clock.advance(30)  # half-open: a probe may go to a
    assert router.select("chat", "").worker.name == "a"


def test_workers_lacking_the_capability_never_serve() -> None:
    router = make_router(
        worker("v", caps=frozenset({"vision"}), realm="$CHAT", models=("llava",)),
    )
    router.pools["$V"] = PoolState("$V", "chat", ("v",), "health")
    for target in ("", "v", "llava", "$CHAT", "$V"):
        assert router.select("chat", target) is None, target
        assert not router.could_serve("chat", target), target
    assert router.select("vision", "v").worker.name == "v"


def test_vision_query_goes_to_vision_realm() -> None:
    router = make_router(
        worker("c", caps=frozenset({"chat"})),
        worker("v", caps=frozenset({"vision"})),
        worker("cv", caps=frozenset({"chat", "vision"}), health=100),  # home $CHAT
    )
    choice = router.select("vision", "")
    assert choice is not None
    assert choice.worker.name == "v"
    assert choice.realm == "$VISION"


def test_queue_realm() -> None:
    router = make_router()
    assert router.queue_realm("chat", "") == "$CHAT"
    assert router.queue_realm("chat", "llama3") == "$CHAT"
    assert router.queue_realm("chat", "$FAST") == "$CHAT"  # a pool is not a realm
    assert router.queue_realm("chat", "$OVERFLOW") == "$OVERFLOW"
    assert router.queue_realm("vision", "") == "$VISION"
    assert router.queue_realm("imagine", "") == ""  # no realm for it here


def test_realm_table_route_is_primary_then_backups() -> None:
    table = RealmTable()
    table.load([realm("$B2", [], ["chat"]), realm("$CHAT", ["chat"]), realm("$A1", [], ["chat"])])
    assert [r.name for r in table.route("chat")] == ["$CHAT", "$A1", "$B2"]
    assert table.route("nothing") == []


# --- specialisations --------------------------------------------------------------------


def test_select_prefers_specialists_named_in_the_prompt() -> None:
    router = make_router(
        worker("general", health=100),
        worker("coder", health=40, specializations={"code": ["python", "rust"]}),
    )
    assert router.select("chat", "", prompt="Write some Python please").worker.name == "coder"
    assert router.select("chat", "", prompt="rust: borrow checker?").worker.name == "coder"
    # No keyword in the prompt: every candidate, so health decides.
    assert router.select("chat", "", prompt="Tell me a joke").worker.name == "general"
    assert router.select("chat", "").worker.name == "general"


def test_keywords_match_whole_words() -> None:
    coder = worker("coder", specializations={"code": ["python"]})
    other = worker("other")
    assert names(specialists([coder, other], "pythonic prose")) == ["coder", "other"]
    assert names(specialists([coder, other], "I like python.")) == ["coder"]


def test_multi_word_keywords_match_as_phrases() -> None:
    ml = worker("ml", specializations={"ai": ["machine learning"]})
    other = worker("other")
    assert names(specialists([ml, other], "Explain Machine Learning to me")) == ["ml"]
    assert names(specialists([ml, other], "a learning machine")) == ["ml", "other"]
    assert names(specialists([ml, other], "machine")) == ["ml", "other"]


def test_keywords_with_symbols_match() -> None:
    # "keywords appear in the prompt": c++, c#, node.js are common specialisations.
    coder = worker("coder", specializations={"code": ["c++", "c#", "node.js"]})
    other = worker("other")
    assert names(specialists([coder, other], "Help with C++ templates")) == ["coder"]
    assert names(specialists([coder, other], "is C# garbage collected?")) == ["coder"]
    assert names(specialists([coder, other], "a node.js server")) == ["coder"]


def test_multi_word_keywords_respect_word_boundaries() -> None:
    # Single words match whole words only; a phrase should too.
    artist = worker("artist", specializations={"art": ["ai art"]})
    other = worker("other")
    assert names(specialists([artist, other], "make some AI art")) == ["artist"]
    assert names(specialists([artist, other], "visit a Thai art museum")) == ["artist", "other"]


def test_busy_specialist_falls_back_to_the_others() -> None:
    router = make_router(
        worker("general", health=50),
        worker("coder", health=100, in_flight=1, specializations={"code": ["python"]}),
    )
    assert router.select("chat", "", prompt="python").worker.name == "general"


def test_several_specialists_are_chosen_among_by_strategy() -> None:
    router = make_router(
        worker("general", health=100),
        worker("py1", health=40, specializations={"code": ["python"]}),
        worker("py2", health=60, specializations={"lang": ["python", "go"]}),
    )
    assert router.select("chat", "", prompt="python").worker.name == "py2"
