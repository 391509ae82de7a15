"""The policy's view of a worker's load between polls: the router's own finished requests are
taken off the last poll's running count until a poll sent after them arrives (regression: an
agent's back-to-back turn was charged interference from the turn that had just ended)."""

from __future__ import annotations

from ppd_server.fleet.loads import LoadReport
from ppd_server.routing.types import CostCoefficients
from ppd_server.fleet.workers import Worker

COEFS = CostCoefficients()


def _decode_with(running: int, context: int) -> Worker:
    w = Worker("http://d", "decode", healthy=True)
    w.set_load(LoadReport(running_reqs=running, running_context_tokens=context), "v1/loads", polled_at=10.0)
    return w


def test_a_request_that_ended_after_the_poll_is_not_counted_as_running() -> None:
    w = _decode_with(running=2, context=600)
    w.inflight = 1
    w.release(now=11.0)
    view = w.view(COEFS)
    assert view.running_reqs == 1
    assert view.running_context_tokens == 300
    assert view.inflight == 0


def test_a_poll_sent_after_the_finish_replaces_the_correction() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 1
    w.release(now=11.0)
    assert w.view(COEFS).running_reqs == 0
    w.set_load(LoadReport(running_reqs=1, running_context_tokens=50), "v1/loads", polled_at=12.0)
    assert w.view(COEFS).running_reqs == 1  # a new stream started: the fresh poll is believed


def test_a_poll_sent_before_the_finish_keeps_the_correction() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 1
    w.release(now=11.0)
    w.set_load(LoadReport(running_reqs=1, running_context_tokens=100), "v1/loads", polled_at=10.5)
    assert w.view(COEFS).running_reqs == 0


def test_more_finishes_than_polled_streams_floor_at_zero() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 3
    for t in (11.0, 11.1, 11.2):
        w.release(now=t)
    view = w.view(COEFS)
    assert (view.running_reqs, view.running_context_tokens) == (0, 0)
