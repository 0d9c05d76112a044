"""FairQueue: priority classes first, round-robin across users within a class."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from rentahal.scheduler.fair_queue import FairQueue
from tests.conftest import FUZZ_SCALE

_ids = itertools.count()


@dataclass(eq=False)
class Job:
    user_id: str
    priority: int = 1
    label: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"Job({self.user_id!r}, p{self.priority}, {self.label or self.id})"


def queue(*jobs: Job, limit: int = 1000) -> FairQueue[Job]:
    q: FairQueue[Job] = FairQueue("$CHAT", limit)
    for job in jobs:
        q.push(job)
    return q


def drain(q: FairQueue[Job]) -> list[Job]:
    """Dispatch one job at a time, always the first head, as the scheduler does."""
    order = []
    while heads := q.heads():
        job = heads[0]
        q.take(job)
        order.append(job)
    assert len(q) == 0
    return order


def labels(jobs: list[Job]) -> list[str]:
    return [j.label for j in jobs]


# --- ordering ---------------------------------------------------------------------------


def test_lower_priority_number_is_dispatched_first() -> None:
    q = queue(Job("u", 2, "low"), Job("v", 1, "mid"), Job("w", 0, "high"), Job("u", 1, "mid2"))
    assert labels(drain(q)) == ["high", "mid", "mid2", "low"]


def test_priority_class_beats_turn_order() -> None:
    # A later high-priority job goes ahead of a whole backlog of lower-priority jobs.
    backlog = [Job("bulk", 1, f"b{i}") for i in range(10)]
    urgent = Job("bulk", 0, "urgent")
    q = queue(*backlog, urgent)
    assert q.heads()[0] is urgent
    assert drain(q)[0] is urgent


def test_heads_lists_each_users_next_job_in_turn_order() -> None:
    a1, a2, b1, c1 = Job("a", label="a1"), Job("a", label="a2"), Job("b"), Job("c")
    q = queue(a1, b1, a2, c1)
    assert q.heads() == [a1, b1, c1]


def test_heads_sorted_by_priority_then_turn_order() -> None:
    a, b, c = Job("a", 2), Job("b", 0), Job("c", 1)
    q = queue(a, b, c)
    assert q.heads() == [b, c, a]


def test_take_moves_user_to_back_of_turn_order() -> None:
    a1, a2, b1, c1 = Job("a"), Job("a"), Job("b"), Job("c")
    q = queue(a1, a2, b1, c1)
    q.take(a1)
    assert q.heads() == [b1, c1, a2]


def test_take_of_a_users_last_job_drops_the_user() -> None:
    a1, b1 = Job("a"), Job("b")
    q = queue(a1, b1)
    q.take(a1)
    assert q.heads() == [b1]
    assert q.count_for("a") == 0


def test_round_robin_across_users() -> None:
    q = queue(
        *[Job("a", label=f"a{i}") for i in range(3)],
        *[Job("b", label=f"b{i}") for i in range(2)],
        Job("c", label="c0"),
    )
    assert labels(drain(q)) == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_a_users_jobs_keep_their_order() -> None:
    jobs = [Job("a", label=str(i)) for i in range(5)]
    q = queue(*jobs, Job("b"), Job("c"))
    dispatched = [j for j in drain(q) if j.user_id == "a"]
    assert dispatched == jobs


def test_push_front_puts_a_retry_first_in_its_users_line() -> None:
    a1, a2, a3, b1 = Job("a", label="a1"), Job("a", label="a2"), Job("a", label="a3"), Job("b")
    q = queue(a1, a2, b1)
    q.take(a1)  # dispatched ... and failed: retried at the front of a's line
    q.push(a3)
    q.push(a1, front=True)
    assert q.heads() == [b1, a1]
    assert drain(q) == [b1, a1, a2, a3]


def test_push_front_for_a_new_user_joins_the_turn_order_at_the_back() -> None:
    a1, b1 = Job("a"), Job("b")
    q = queue(a1)
    q.push(b1, front=True)
    assert q.heads() == [a1, b1]


def test_remove_does_not_change_turn_order() -> None:
    a1, a2, b1, b2, c1 = Job("a"), Job("a"), Job("b"), Job("b"), Job("c")
    q = queue(a1, a2, b1, b2, c1)
    assert q.remove(a1) is True
    # a keeps its turn (take would have sent it to the back).
    assert q.heads() == [a2, b1, c1]
    assert len(q) == 4
    assert q.remove(b2) is True
    assert drain(q) == [a2, b1, c1]


def test_remove_of_a_users_last_job_drops_the_user_and_class() -> None:
    a1, b1 = Job("a", 0), Job("b", 1)
    q = queue(a1, b1)
    assert q.remove(a1) is True
    assert q.heads() == [b1]
    assert q.position(b1) == 1
    assert list(q) == [b1]


def test_remove_unknown_job_returns_false() -> None:
    a1 = Job("a")
    q = queue(a1)
    assert q.remove(Job("a")) is False  # same user, not queued
    assert q.remove(Job("zz")) is False  # unknown user
    assert q.remove(Job("a", priority=7)) is False  # unknown class
    assert len(q) == 1
    assert q.remove(a1) is True
    assert q.remove(a1) is False  # already gone
    assert len(q) == 0


# --- bookkeeping ------------------------------------------------------------------------


def test_count_for_counts_a_user_across_priority_classes() -> None:
    q = queue(Job("a", 0), Job("a", 1), Job("a", 1), Job("b", 1))
    assert q.count_for("a") == 3
    assert q.count_for("b") == 1
    assert q.count_for("nobody") == 0


def test_len_tracks_push_take_remove() -> None:
    a1, a2, b1 = Job("a"), Job("a"), Job("b")
    q = queue()
    assert len(q) == 0
    q.push(a1)
    q.push(a2)
    q.push(b1, front=True)
    assert len(q) == 3
    q.take(a1)
    assert len(q) == 2
    q.remove(b1)
    assert len(q) == 1
    q.remove(b1)  # not queued: no change
    assert len(q) == 1


def test_full_and_limit() -> None:
    q = queue(limit=2)
    assert q.limit == 2
    assert not q.full
    q.push(Job("a"))
    assert not q.full
    q.push(Job("b"))
    assert q.full
    q.take(q.heads()[0])
    assert not q.full


def test_zero_limit_is_always_full() -> None:
    assert queue(limit=0).full


def test_iter_yields_every_job_by_priority_then_turn_order() -> None:
    a1, a2, b1, c0 = Job("a", 1), Job("a", 1), Job("b", 1), Job("c", 0)
    q = queue(a1, b1, a2, c0)
    assert list(q) == [c0, a1, a2, b1]
    assert len(list(q)) == len(q)


# --- position ---------------------------------------------------------------------------


def test_position_simple_round_robin() -> None:
    a = [Job("a", label=f"a{i}") for i in range(3)]
    b = [Job("b", label=f"b{i}") for i in range(2)]
    q = queue(*a, *b)
    # dispatch order: a0 b0 a1 b1 a2
    assert [q.position(j) for j in a] == [1, 3, 5]
    assert [q.position(j) for j in b] == [2, 4]


def test_position_counts_higher_priority_classes_ahead() -> None:
    low = Job("a", 2)
    q = queue(low, Job("b", 0), Job("c", 1), Job("c", 1))
    assert q.position(low) == 4


def check_positions_match_dispatch(q: FairQueue[Job]) -> None:
    jobs = list(q)
    positions = {j.id: q.position(j) for j in jobs}
    order = drain(q)
    assert sorted(order, key=lambda j: j.id) == sorted(jobs, key=lambda j: j.id)
    assert {j.id: i for i, j in enumerate(order, start=1)} == positions


# (user, priority, front?) per push; some pushes are followed by a take or a remove
push_op = st.tuples(
    st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    st.integers(min_value=0, max_value=2),
    st.booleans(),
    st.sampled_from(["push", "push", "push", "take", "remove"]),
)


@settings(max_examples=150 * FUZZ_SCALE, deadline=None)
@given(st.lists(push_op, max_size=40), st.randoms(use_true_random=False))
def test_position_matches_simulated_dispatch_order(ops, rnd: random.Random) -> None:
    q = queue()
    for user, priority, front, action in ops:
        q.push(Job(user, priority), front=front)
        # Interleave dispatches and cancellations so the turn order is not just push order.
        if action == "take" and q.heads():
            q.take(q.heads()[0])
        elif action == "remove" and len(q):
            q.remove(rnd.choice(list(q)))
    check_positions_match_dispatch(q)


def test_position_matches_dispatch_order_seeded_loop() -> None:
    # The same property without hypothesis' shrinking, over larger queues.
    rnd = random.Random(20240607)
    for _ in range(200):
        q = queue()
        users = [f"u{i}" for i in range(rnd.randint(1, 8))]
        for _ in range(rnd.randint(0, 60)):
            q.push(Job(rnd.choice(users), rnd.randint(0, 3)), front=rnd.random() < 0.2)
            if rnd.random() < 0.2 and q.heads():
                q.take(q.heads()[0])
            if rnd.random() < 0.1 and len(q):
                q.remove(rnd.choice(list(q)))
        check_positions_match_dispatch(q)


# --- fairness ---------------------------------------------------------------------------


def test_newcomer_is_dispatched_within_two_takes_of_a_big_backlog() -> None:
    q = queue(*[Job("hog", label=f"h{i}") for i in range(100)])
    newcomer = Job("newbie", label="new")
    q.push(newcomer)
    assert q.position(newcomer) <= 2
    taken = []
    for _ in range(2):
        job = q.heads()[0]
        q.take(job)
        taken.append(job)
    assert newcomer in taken
    assert len(q) == 100 - 1


def test_newcomer_arriving_mid_backlog_is_dispatched_within_two_takes() -> None:
    q = queue(*[Job("hog") for i in range(100)])
    for _ in range(37):  # the hog has been served for a while
        q.take(q.heads()[0])
    newcomer = Job("newbie")
    q.push(newcomer)
    assert q.position(newcomer) <= 2
    taken = [q.heads()[0]]
    q.take(taken[0])
    taken.append(q.heads()[0])
    q.take(taken[1])
    assert newcomer in taken
