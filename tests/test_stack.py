"""The stacked launcher's Stack on its own (no MXNet, no Hydra): jobs meet at their requests,
each group of equal keys trains once per round, a failed request fails its job alone, a job's
fork runs its parts as jobs whose requests train with everyone's, an interrupt reaches every
job, forked or not, and groups that cannot share train side by side."""
from __future__ import annotations

import threading

import pytest

from hydra_plugins.softmax_sweep_stacked.stack import Job, Request, Stack, current, groups_training


def _recording(trained: list):
    """A group's train function: each round's payloads go to `trained`; "bad" fails its request."""
    def train(requests: list[Request]) -> None:
        trained.append(sorted(r.payload for r in requests))
        for r in requests:
            if r.payload == "bad":
                r.error = ValueError("bad request")
            r.result = f"trained {r.payload}"
    return train


def test_jobs_meet_at_their_requests_and_each_group_trains_once_a_round() -> None:
    trained: list = []
    train = _recording(trained)

    def ask(key: str, payload: str) -> str:
        return current().request(Request(key, train, payload))

    def failing() -> None:
        try:
            ask("a", "bad")
        except ValueError as e:
            return f"failed: {e}"

    results = Stack().run([Job(lambda: [ask("a", "one"), ask("a", "one again")]), Job(lambda: ask("a", "two")),
                           Job(lambda: ask("b", "three")), Job(failing), Job(lambda: "no request")])
    assert results == [["trained one", "trained one again"], "trained two", "trained three", "failed: bad request",
                       "no request"]
    assert trained == [["bad", "one", "two"], ["three"], ["one again"]], "groups by key, rounds by request"
    assert current() is None, "outside a job's thread there is no stack"


def test_a_forked_jobs_parts_train_with_the_other_jobs_requests() -> None:
    """A trial's seeds: parts of one job, each its own request, in the same rounds as the others'."""
    trained: list = []
    train = _recording(trained)

    def ask(payload: str) -> str:
        return current().request(Request("key", train, payload))

    def forking() -> list:
        before = ask("parent")
        outcomes = current().fork([lambda: ask("seed 0"), lambda: ask("seed 1") + " and " + ask("seed 1 again"),
                                   lambda: ask("bad")])
        return [before, *((result, type(error).__name__ if error else None) for result, error in outcomes)]

    results = Stack().run([Job(forking), Job(lambda: [ask("other"), ask("other again")])])
    assert results[0] == ["trained parent", ("trained seed 0", None),
                          ("trained seed 1 and trained seed 1 again", None), (None, "ValueError")]
    assert results[1] == ["trained other", "trained other again"]
    # round 1: the two jobs; round 2: the fork's three parts with the other job's second request
    assert trained == [["other", "parent"], ["bad", "other again", "seed 0", "seed 1"], ["seed 1 again"]]


def test_an_interrupt_reaches_every_job_the_parts_of_a_fork_and_their_parent() -> None:
    seen: list = []

    def train(requests: list[Request]) -> None:
        raise KeyboardInterrupt

    def part(name: str) -> None:
        try:
            current().request(Request("key", train, name))
        except KeyboardInterrupt:
            seen.append(name)
            raise

    def forking() -> None:
        outcomes = current().fork([lambda: part("seed 0"), lambda: part("seed 1")])
        seen.append(("parent", [type(error).__name__ for _, error in outcomes]))

    with pytest.raises(KeyboardInterrupt):
        Stack().run([Job(forking), Job(lambda: part("other"))])
    assert sorted(map(str, seen)) == sorted(map(str, ["other", "seed 0", "seed 1",
                                                      ("parent", ["KeyboardInterrupt", "KeyboardInterrupt"])]))


def test_a_fork_of_nothing_returns_at_once() -> None:
    assert Stack().run([Job(lambda: current().fork([]))]) == [[]]


def test_each_turn_of_a_job_and_of_its_fork_starts_from_the_state_its_last_turn_left() -> None:
    """Process-wide state (the launcher's HydraConfig) one job sets and others overwrite: each
    job's hooks keep what its turn left and put it back at its next turn; a fork's parts share
    their parent's."""
    state = {"current": None}
    trained: list = []
    train = _recording(trained)

    def hooks() -> dict:
        kept = {"value": None}

        def enter() -> None:
            if kept["value"] is not None:
                state["current"] = kept["value"]

        def leave() -> None:
            kept["value"] = state["current"]
        return dict(before_each_step=enter, after_each_step=leave)

    def job(name: str) -> list:
        state["current"] = name  # the job's first turn sets its own
        current().request(Request("key", train, name))
        seen = [state["current"]]
        parts = current().fork([lambda: [state["current"], current().request(Request("key", train, f"{name} part")),
                                         state["current"]][::2]])
        return [*seen, *(result for result, _ in parts), state["current"]]

    results = Stack().run([Job(lambda: job("a"), **hooks()), Job(lambda: job("b"), **hooks())])
    assert results == [["a", ["a", "a"], "a"], ["b", ["b", "b"], "b"]]
    assert trained == [["a", "b"], ["a part", "b part"]]


def test_groups_that_cannot_share_train_side_by_side_and_know_it() -> None:
    """at_once 2: two groups' train functions run at the same time (each waits for the other to
    start), each told that two groups train now; one alone is told one. A group's error comes out
    of the launch once both have ended."""
    both = threading.Barrier(2, timeout=30)  # broken (an error) unless both groups meet inside
    seen: dict = {}

    def train(requests: list[Request]) -> None:
        both.wait()
        seen[requests[0].key] = groups_training()
        both.wait()
        for r in requests:
            r.result = requests[0].key

    def ask(key: str) -> str:
        return current().request(Request(key, train, None))

    assert Stack(at_once=2).run([Job(lambda: ask("a")), Job(lambda: ask("b"))]) == ["a", "b"]
    assert seen == {"a": 2, "b": 2}, "both groups ran at once, each knowing of the other"
    alone: list = []
    assert Stack(at_once=2).run([Job(lambda: current().request(Request("a", lambda rs: alone.append(
        groups_training()))))]) == [None] and alone == [1] and groups_training() == 1

    started = threading.Event()
    ended = []

    def slow(requests: list[Request]) -> None:
        started.wait(timeout=30)
        ended.append("slow")
        requests[0].result = "slow"

    def failing(requests: list[Request]) -> None:
        started.set()
        raise RuntimeError("group failed")

    with pytest.raises(RuntimeError, match="group failed"):
        Stack(at_once=2).run([Job(lambda: current().request(Request("x", failing))),
                              Job(lambda: current().request(Request("y", slow)))])
    assert ended == ["slow"], "the other group ended before the launch raised"


def test_a_group_alone_trains_in_a_thread_of_its_own() -> None:
    """Not in the launcher's thread, which lives on: whatever a train function's thread holds while
    it lives (an OpenMP team) ends with the group."""
    where: list = []

    def train(requests: list[Request]) -> None:
        where.append(threading.current_thread())
        for r in requests:
            r.result = "trained"

    for at_once in (1, 2):
        where.clear()
        assert Stack(at_once=at_once).run([Job(lambda: current().request(Request("a", train, None)))]) == ["trained"]
        assert len(where) == 1 and where[0] is not threading.current_thread() and not where[0].is_alive()


def test_the_next_group_trains_while_the_last_ones_jobs_go_on() -> None:
    """With one group at a time, the next group starts as soon as one has trained, not after that
    group's jobs have ended their runs (exercise 2: 120 runs' curves and MLflow writes, 6-7 s, held
    a core idle twice)."""
    started = threading.Event()

    def first(requests: list[Request]) -> None:
        requests[0].result = "first"

    def second(requests: list[Request]) -> None:
        started.set()
        requests[0].result = "second"

    def first_job() -> bool:
        current().request(Request("first", first))
        return started.wait(timeout=30)  # True once the second group trains beside this job's end

    assert Stack(at_once=1).run([Job(first_job), Job(lambda: current().request(Request("second", second)))]) == \
        [True, "second"]


def test_a_groups_jobs_go_on_while_other_groups_still_train() -> None:
    """A trial whose group has trained ends its run (its curves, its MLflow run) while a longer
    group trains beside it, not after every group of the launch; a job that asks again waits for
    the next round."""
    went_on = threading.Event()
    rounds: list = []

    def quick(requests: list[Request]) -> None:
        rounds.append([r.payload for r in requests])
        for r in requests:
            r.result = r.payload

    def long(requests: list[Request]) -> None:
        requests[0].result = went_on.wait(timeout=30)  # True once the quick group's job went on

    def quick_job() -> list:
        first = current().request(Request("quick", quick, "first"))
        went_on.set()
        return [first, current().request(Request("quick", quick, "again"))]

    assert Stack(at_once=2).run([Job(quick_job), Job(lambda: current().request(Request("long", long)))]) == \
        [["first", "again"], True]
    assert rounds == [["first"], ["again"]]
