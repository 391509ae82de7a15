"""One trace per turn across processes: the SDK's CLIENT span (in-memory exporter), the
router's ``ppd.route`` span and its worker-call CLIENT spans (exported over OTLP/HTTP by a real
``ppd-server`` subprocess to an in-test collector), parent-linked."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent.parent / "sdk"))

from otlp_collector import CollectedSpan, OTLPCollector
from processes import free_port, router_argv, started

from ppd_sdk import ChatSession

pytestmark = pytest.mark.e2e
SPAN_KIND_CLIENT = 3  # OTLP enum value


@pytest.fixture(scope="module")
def traced_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OTLPCollector]]:
    with OTLPCollector() as collector:
        port = free_port()
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "ppd-server-under-test",
        }
        log = tmp_path_factory.mktemp("traced") / "router.log"
        with started("ppd-server", router_argv(port), port, log, env=env, timeout=420.0) as router:
            yield router.url, collector


def _chain_reaches(span: CollectedSpan, root_id: int, by_id: dict[int, CollectedSpan]) -> bool:
    seen = 0
    parent = span.parent_span_id
    while parent is not None and seen < 50:
        if parent == root_id:
            return True
        nxt = by_id.get(parent)
        parent = nxt.parent_span_id if nxt else None
        seen += 1
    return False


def _complete(trace_id: int, root_id: int, spans: list[CollectedSpan]) -> bool:
    mine = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in mine}
    route = [s for s in mine if s.name == "ppd.route" and _chain_reaches(s, root_id, by_id)]
    calls = [
        s
        for s in mine
        if s.kind == SPAN_KIND_CLIENT and "server.address" in s.attributes and _chain_reaches(s, root_id, by_id)
    ]
    return bool(route) and bool(calls)


def test_each_turn_is_one_trace_with_client_route_and_worker_spans(traced_router: tuple[str, OTLPCollector]) -> None:
    base, collector = traced_router
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with ChatSession(base_url=base, system="Be brief.", tracer_provider=provider) as chat:
        chat.send("What is the capital of Germany?", temperature=0, max_tokens=16)
        with chat.stream("And of France?", temperature=0, max_tokens=16) as stream:
            for _ in stream:
                pass
    client_spans = exporter.get_finished_spans()
    assert [s.name for s in client_spans] == [f"chat {chat.model}"] * 2
    assert len({s.context.trace_id for s in client_spans}) == 2  # one trace per turn

    roots = [(s.context.trace_id, s.context.span_id) for s in client_spans]
    spans = collector.wait_for(lambda got: all(_complete(t, r, got) for t, r in roots))
    for (trace_id, root_id), client in zip(roots, client_spans):
        assert _complete(trace_id, root_id, spans), [(s.name, s.trace_id == trace_id) for s in spans]
        route_span = next(s for s in spans if s.trace_id == trace_id and s.name == "ppd.route")
        names = sorted(s.name for s in spans if s.trace_id == trace_id)
        print(f"trace {trace_id:032x}: client '{client.name}' -> server spans {names}")
        # The client span carries the same decision the server recorded.
        assert client.attributes["ppd.route"] == route_span.attributes["ppd.route"]
        for key in (
            "ppd.turn",
            "ppd.decode",
            "ppd.policy",
            "ppd.weights.ttft",
            "ppd.weights.tpot",
            "gen_ai.conversation.id",
        ):
            assert client.attributes[key] == route_span.attributes[key], key  # one name per attribute, both sides
        assert route_span.attributes["ppd.policy.weights.ttft"] == 1.0  # what the policy scored with
        assert client.attributes["gen_ai.conversation.id"] == chat.conversation_id
