"""Review finding: a decode request whose KV fetch fails in an unexpected way (a malformed
header from the prefill peer) must end with a 503, not hang in AWAITING_KV forever."""

from __future__ import annotations

import asyncio
import json
import struct

from .conftest import serve_worker


async def _malformed_prefill_peer():
    async def serve(reader, writer):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(size)
        header = json.dumps({"ok": True, "first_token": 1, "start": 0, "num_tokens": 4,
                             "prefill_cached_tokens": 0, "dtype": "no_such_dtype", "shape": [4],
                             "nbytes": 4}).encode()
        writer.write(struct.pack(">I", len(header)) + header + b"\0" * 4)
        await writer.drain()
        try:
            await reader.read()
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_malformed_kv_header_fails_the_request_with_503():
    server = await _malformed_prefill_peer()
    port = server.sockets[0].getsockname()[1]
    try:
        async with serve_worker(disaggregation_mode="decode") as (client, worker):
            body = {"text": "hello there", "sampling_params": {"temperature": 0, "max_new_tokens": 4},
                    "bootstrap_host": "127.0.0.1", "bootstrap_port": port, "bootstrap_room": 7}
            # bounded so a hang fails the test instead of blocking the suite
            r = await asyncio.wait_for(client.post("/generate", json=body), 30)
            assert r.status == 503, await r.text()
            assert "KV" in (await r.json())["error"]["message"]
            assert worker.scheduler.num_running == 0
    finally:
        server.close()
        await server.wait_closed()
