"""Keys never reach a log line or a trace; prompts and completions neither, unless the operator
(router: ``--log-content``) or the application (SDK: the GenAI convention's
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``) opts in.

A router is served as ``ppd-server`` serves it (its own protocol-error handler included) over fake
P/D workers, with two API keys and an admin key, every logger at DEBUG and an in-memory span
exporter; a client session (``ppd_sdk``, with its own in-memory exporter) and raw calls then use it
every way that writes a log line or a span: good, wrong and near-miss keys, admin calls, streamed and
non-streamed turns, a malformed header carrying the key, a worker that fails mid-stream. Not one
captured log record or exported span (attributes, events, status) may hold a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fake_sglang import FakeWorker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ppd_sdk import AsyncChatSession, PPDError
from ppd_server.config import PrefillSpec, RouterConfig
from ppd_server.http.app import create_app
from ppd_server.http.serve import make_runner

KEY_A, KEY_B = "sk-canary-A-4c1d9f0e2b", "sk-canary-B-8e7a6b5c4d"
ADMIN = "adm-canary-0f9e8d7c6b"
WRONG = "sk-canary-WRONG-31415926"
PROMPT = "PROMPT-CANARY-my-card-is-4111"
COMPLETION = "tok tok tok"  # what the fake workers answer (3 tokens)
SECRETS = (KEY_A, KEY_B, ADMIN, WRONG, KEY_A[4:-2])


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@asynccontextmanager
async def _served(provider: TracerProvider, **config: Any) -> AsyncIterator[tuple[str, list[FakeWorker]]]:
    # `d` reports itself busier, so the policy places new conversations on `bad` first (which then
    # dies mid-stream and is retried around): the failure paths are exercised on every run, not
    # only when port order happens to break the tie that way
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode", load={"num_running_reqs": 3})
    bad = FakeWorker(role="decode", die_after_chunks=1)
    for w in (p, d, bad):
        await w.start()
    cfg = RouterConfig(
        prefill=(PrefillSpec(p.url, p.bootstrap_port),),
        decode=(d.url, bad.url),
        load_interval_s=3600.0,
        api_key=(KEY_A, KEY_B),
        admin_key=ADMIN,
        **config,
    )
    runner = make_runner(create_app(cfg, tracer_provider=provider), drain_timeout_s=2.0, max_header_bytes=32768)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", [p, d, bad]
    finally:
        await runner.cleanup()
        for w in (p, d, bad):
            await w.close()


async def _raw(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


async def _exercise(url: str, sdk_provider: TracerProvider) -> None:
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    async with aiohttp.ClientSession() as http:
        for key in (KEY_A, KEY_B, WRONG, KEY_A + "x", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            for stream in (False, True):
                for _ in range(3):  # some land on the worker that dies mid-stream
                    async with http.post(
                        url + "/v1/chat/completions",
                        json={**chat, "stream": stream},
                        headers={**headers, "X-PPD-Conversation-Id": "c-" + str(stream)},
                    ) as r:
                        await r.read()
        for key in (ADMIN, KEY_A, WRONG):
            for path in ("/admin/sessions", "/admin/workers"):
                async with http.get(url + path, headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
    async with AsyncChatSession(
        base_url=url + "/v1", api_key=KEY_A, model="fake-model", tracer_provider=sdk_provider, max_retries=1
    ) as s:
        await s.send(PROMPT)
        for _ in range(4):  # a stream cut mid-answer by the dying worker raises; the next may not
            with contextlib.suppress(PPDError):
                async for _ in s.stream(PROMPT + " again"):
                    pass
    host_port = url.removeprefix("http://")
    # malformed requests carrying the key: an invalid header byte, a header over the limit
    bad_auth = f"Authorization: Bearer {KEY_A}\x01\r\n"
    await _raw(url, f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host_port}\r\n{bad_auth}\r\n".encode())
    await _raw(url, f"GET /health HTTP/1.1\r\nHost: {host_port}\r\nX-Pad: {KEY_B * 2000}\r\n\r\n".encode())
    await _raw(url, f"GET /h{KEY_B}\x00 HTTP/1.1\r\nAuthorization: Bearer {ADMIN}\r\n\r\n".encode())


def _span_text(exporter: InMemorySpanExporter) -> str:
    spans = exporter.get_finished_spans()
    assert spans, "the test must have produced spans"
    return "\n".join(s.to_json() for s in spans)


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("ppd_server", "aiohttp", "aiohttp.access", "aiohttp.server", "aiohttp.web", "ppd_sdk", "openai"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _log_text(caplog) -> str:
    """Our processes' log records (router, SDK, aiohttp's server and access logs); the openai and
    httpx libraries' own DEBUG logging of requests in the client is theirs, not ours."""
    out = []
    for rec in caplog.records:
        if not rec.name.startswith(("ppd_server", "ppd_sdk", "ppd_engine", "aiohttp")):
            continue
        out.append(rec.getMessage())
        if rec.exc_info:
            out.append(logging.Formatter().formatException(rec.exc_info))
    return "\n".join(out)


async def test_no_key_prompt_or_completion_in_logs_or_spans_by_default(all_logs, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    router_provider, router_spans = _provider()
    sdk_provider, sdk_spans = _provider()
    async with _served(router_provider) as (url, workers):
        await _exercise(url, sdk_provider)
    assert workers[2].seen, "the dying worker served some turns (a failure path was logged)"
    logs, router_text, sdk_text = _log_text(all_logs), _span_text(router_spans), _span_text(sdk_spans)
    assert "bad HTTP request" in logs, "the malformed requests were logged (without their bytes)"
    for where, text in (("logs", logs), ("router spans", router_text), ("sdk spans", sdk_text)):
        for secret in (*SECRETS, PROMPT, COMPLETION):
            assert secret not in text, f"{secret!r} found in the {where}"
    assert "gen_ai.input.messages" not in router_text + sdk_text


async def test_content_only_where_opted_in_and_never_keys(all_logs, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    router_provider, router_spans = _provider()
    sdk_provider, sdk_spans = _provider()
    async with _served(router_provider, log_content=True) as (url, _):
        await _exercise(url, sdk_provider)
    logs, router_text, sdk_text = _log_text(all_logs), _span_text(router_spans), _span_text(sdk_spans)
    route_spans = [s for s in router_spans.get_finished_spans() if s.name == "ppd.route"]
    assert any(PROMPT in (s.attributes or {}).get("gen_ai.input.messages", "") for s in route_spans)
    turns = [s for s in sdk_spans.get_finished_spans() if s.name.startswith("chat ")]
    assert any(PROMPT in json.loads(s.attributes["gen_ai.input.messages"])[-1]["content"] for s in turns)
    assert any(COMPLETION in s.attributes.get("gen_ai.output.messages", "") for s in turns)
    for secret in SECRETS:
        assert secret not in logs + router_text + sdk_text, secret
    assert PROMPT not in logs and COMPLETION not in logs, "opting in traces content; it never logs it"
