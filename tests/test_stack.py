"""The stacked launcher's Stack on its own (no MXNet, no Hydra): jobs meet at their requests,
each group of equal keys trains once per round, a failed request fails its job alone, and an
interrupt reaches every job."""
from __future__ import annotations

import pytest

from hydra_plugins.softmax_sweep_stacked.stack import Job, Request, Stack, current


def test_jobs_meet_at_their_requests_and_each_group_trains_once_a_round() -> None:
    trained: list = []

    def train(requests: list[Request]) -> None:
        trained.append(sorted(r.payload for r in requests))
        for r in requests:
            if r.payload == "bad":
                r.error = ValueError("bad request")
            r.result = f"trained {r.payload}"

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


def test_an_interrupt_in_training_reaches_every_waiting_job() -> None:
    seen: list = []

    def train(requests: list[Request]) -> None:
        raise KeyboardInterrupt

    def job(name: str) -> None:
        try:
            current().request(Request("key", train, name))
        except KeyboardInterrupt:
            seen.append(name)
            raise

    with pytest.raises(KeyboardInterrupt):
        Stack().run([Job(lambda: job("first")), Job(lambda: job("second"))])
    assert sorted(seen) == ["first", "second"], "each job ended its run as interrupted"
