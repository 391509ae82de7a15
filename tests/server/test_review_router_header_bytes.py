"""Forwarded client headers (x-request-id, x-correlation-id, trace headers with tracing off) that
carry non-latin-1 UTF-8 bytes reach the worker byte for byte instead of failing the request with
a 500 (the upstream client encoded its request head as latin-1)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


@pytest.mark.parametrize("name", ["x-request-id", "x-correlation-id", "traceparent"])
async def test_a_utf8_forwarded_header_is_relayed_not_a_500(name):
    u = FakeWorker(role="unified")
    async with router_over([u]) as (client, state):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        body = json.dumps(chat_body()).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                     + name.encode() + b": id-\xe2\x82\xac\r\n"  # the euro sign, UTF-8
                     + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[-300:]
        assert len(u.seen) == 1 and u.seen[0].headers[name].encode("utf-8", "surrogateescape") == b"id-\xe2\x82\xac"
