"""What the simulated router knows, as the live one: loads as of its last poll (its in-flight
counts current), the client's max_tokens instead of the answer's length, the predicted KV bytes
of open P->D turns as link backlog. Each can be idealised; the policy's inputs show which."""

from __future__ import annotations

import pytest

from ppd_server.routing.policies import make_policy
from ppd_server.routing.types import (
    ClusterView,
    CostCoefficients,
    Decision,
    RequestView,
    SessionView,
)
from ppd_sim import ClusterSpec, Conversation, Hardware, RouterBehaviour, Simulation

COEFS = CostCoefficients(5.0, 1.0, 0.2, 20.0, 3.0, 1.0)
HAND = Hardware(COEFS, 100_000, kv_capacity_tokens=100_000, chunk_tokens=4096, link_gb_per_s=1.0)


class Spy:
    """The router's policy, recording what it was shown."""

    def __init__(self, spec: str) -> None:
        self.inner = make_policy(spec)
        self.spec = self.inner.spec
        self.seen: list[tuple[float, RequestView, ClusterView]] = []
        self.sim: Simulation | None = None

    def decide(self, request: RequestView, cluster: ClusterView, session: SessionView | None) -> Decision:
        assert self.sim is not None
        self.seen.append((self.sim.loop.now, request, cluster))
        return self.inner.decide(request, cluster, session)


def simulate(convs, router: RouterBehaviour, policy: str = "pd", cluster: str = "1P1D"):
    spy = Spy(policy)
    sim = Simulation(spy, ClusterSpec.parse(cluster), HAND, tuple(convs), router=router)  # type: ignore[arg-type]
    spy.sim = sim
    return sim.run(), spy


# a 400-token answer streams from ~140 ms to ~9.4 s; a second conversation arrives at 300 ms
STREAMER = Conversation("a", 0.0, ((100, 400),), ())
LATE = Conversation("b", 300.0, ((100, 4),), ())


def decode_seen_by(spy: Spy, conversation: str):
    (cluster,) = [c for _, r, c in spy.seen if r.conversation_id == conversation]
    return cluster.get("sim://d0")


def test_the_policy_sees_load_as_of_the_last_poll_and_its_inflight_count_as_of_now():
    _, lagged = simulate([STREAMER, LATE], RouterBehaviour(poll_interval_ms=500))
    d = decode_seen_by(lagged, "b")
    # polled at 0 ms, before the stream joined: the load says idle; the router's own count says 1
    assert (d.running_reqs, d.running_context_tokens, d.inflight) == (0, 0, 1)
    _, instant = simulate([STREAMER, LATE], RouterBehaviour(poll_interval_ms=0))
    d = decode_seen_by(instant, "b")
    assert (d.running_reqs, d.inflight) == (1, 1) and d.running_context_tokens > 100
    _, short = simulate([STREAMER, LATE], RouterBehaviour(poll_interval_ms=100))  # polled at 200 ms: streaming
    assert decode_seen_by(short, "b").running_reqs == 1


def test_a_stream_that_ended_since_the_last_poll_is_taken_off_the_polled_running_count():
    after = Conversation("b", 9600.0, ((100, 4),), ())  # polled at 5 s (streaming), the stream ended ~9.4 s
    result, spy = simulate([STREAMER, after], RouterBehaviour(poll_interval_ms=5000))
    assert 5000.0 < result.requests[0].finish_ms < 9600.0
    d = decode_seen_by(spy, "b")
    assert (d.running_reqs, d.running_context_tokens, d.inflight) == (0, 0, 0)  # as fleet.workers.Worker.view


def test_polling_stops_when_the_run_is_over_and_the_run_ends_with_its_last_answer():
    result, _ = simulate([STREAMER], RouterBehaviour(poll_interval_ms=500))
    assert result.stop_reason is None and result.sim_ms == pytest.approx(result.requests[0].finish_ms)


def test_the_router_sees_the_clients_max_tokens_not_the_answers_length():
    conv = Conversation("c", 0.0, ((100, 40), (20, 300), (10, 5)), (10.0, 10.0))
    result, spy = simulate([conv], RouterBehaviour(client_max_tokens=256), policy="local")
    assert [r.max_new_tokens for _, r, _ in spy.seen] == [256, 256, 256]
    t1, t2, t3 = result.requests
    assert (t1.output_tokens, t1.cut) == (40, False)
    assert (t2.output_tokens, t2.cut) == (256, True)  # the answer stopped at max_tokens
    assert t3.prompt_tokens == 100 + 40 + 20 + 256 + 10  # the history holds the answer as it was sent
    assert result.requests[1].finish_ms is not None
    result, spy = simulate([conv], RouterBehaviour(client_max_tokens=None), policy="local")
    assert [r.max_new_tokens for _, r, _ in spy.seen] == [40, 300, 5]
    assert [r.cut for r in result.requests] == [False] * 3 and result.requests[
        2
    ].prompt_tokens == 100 + 40 + 20 + 300 + 10


def test_the_router_counts_the_predicted_kv_of_pd_turns_until_their_first_token_as_link_backlog():
    convs = [
        Conversation("a", 0.0, ((100, 400),), ()),
        Conversation("b", 0.001, ((50, 4),), ()),  # "a" is still prefilling: its KV is yet to cross
        Conversation("c", 300.0, ((50, 4),), ()),  # "a" is streaming: its KV crossed long ago
    ]
    _, spy = simulate(convs, RouterBehaviour(link_backlog="router"))
    backlog = {r.conversation_id: c.link_backlog_bytes for _, r, c in spy.seen}
    assert backlog == {"a": 0, "b": 100 * 100_000, "c": 0}
    _, spy = simulate(convs, RouterBehaviour(link_backlog="true"))
    assert [s[2].link_backlog_bytes for s in spy.seen] == [0, 0, 0]


@pytest.mark.parametrize("kwargs", [{"poll_interval_ms": -1}, {"client_max_tokens": 0}, {"link_backlog": "guess"}])
def test_bad_router_behaviour_is_refused(kwargs):
    with pytest.raises(ValueError):
        RouterBehaviour(**kwargs)
