"""A client that leaves while the router waits on a worker still ends every CLIENT span it
started (an unended span is never exported: the trace would lack the worker call that hung)."""

from __future__ import annotations

import asyncio
import functools

import pytest
from fake_sglang import FakeWorker, HeadersThenHold
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from router_harness import chat_body, eventually, router_over


# a non-streamed answer whose body never comes: the router waits in read()
JsonHeadersThenHold = functools.partial(
    HeadersThenHold, answer_headers={"Content-Type": "application/json", "Content-Length": "100"})


LAYOUTS = {  # which fake answers each role: held before its headers, or held after them (in read())
    "replica": (("unified", FakeWorker),),
    "replica-body": (("unified", JsonHeadersThenHold),),
    "pd": (("prefill", FakeWorker), ("decode", FakeWorker)),
    "pd-prefill-body": (("prefill", JsonHeadersThenHold), ("decode", FakeWorker)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_client_spans_end_when_the_client_leaves(layout):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    workers = [kind(role=role, hold=asyncio.Event()) for role, kind in LAYOUTS[layout]]
    async with router_over(workers, tracer_provider=provider) as (client, state):
        try:
            post = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
            await eventually(lambda: all(w.seen for w in workers))
            assert all(w.seen for w in workers)
            post.cancel()
            with pytest.raises(asyncio.CancelledError):
                await post
            await eventually(lambda: any(s.name == "ppd.route" for s in exporter.get_finished_spans()))
            await asyncio.sleep(0.05)
            calls = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
            assert len(calls) == len(workers), [s.name for s in exporter.get_finished_spans()]
            assert all(s.status.status_code == StatusCode.ERROR for s in calls)
        finally:
            for w in workers:
                w.hold.set()
