"""KV transfer between a prefill's bootstrap server and a decode's fetch: the TCP payload, the
same-host shared-memory handoff, and failures that must end fast (never wait out a timeout)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct

import pytest
import torch

from ppd_engine.kv_transfer import (
    BootstrapServer,
    PrefillResult,
    TransferError,
    fetch_kv,
)

from .conftest import serve_worker

TIMEOUT = 60.0  # the configured transfer timeout; a failure must surface long before it


def kv_blob(tokens: int = 37) -> torch.Tensor:
    torch.manual_seed(tokens)
    return torch.randn(2, 2, 3, tokens, 8).to(torch.bfloat16)  # KVPool.read layout


async def transfer(blob: torch.Tensor, server_same_host: bool, fetch_same_host: bool):
    server = BootstrapServer("127.0.0.1", 0, TIMEOUT, same_host=server_same_host)
    await server.start()
    stored: dict = {}

    async def store(received) -> None:
        stored["data"] = received.data.clone()
        stored["handoff"] = received.data.data_ptr()

    try:
        result = PrefillResult(5, blob.shape[3], 2, lambda start, end: blob[:, :, :, start:end].clone())
        sent, received = await asyncio.wait_for(
            asyncio.gather(
                server.send(11, result),
                fetch_kv("127.0.0.1", server.port, 11, 4, TIMEOUT, store, same_host=fetch_same_host),
            ),
            20,
        )
    finally:
        await server.close()
    return sent, received, stored


@pytest.mark.parametrize(
    "server_same_host,fetch_same_host",
    [(True, True), (False, True), (True, False)],
    ids=["shared-memory", "prefill-forces-tcp", "decode-asks-tcp"],
)
async def test_kv_arrives_intact_over_either_path(server_same_host, fetch_same_host):
    blob = kv_blob()
    sent, received, stored = await transfer(blob, server_same_host, fetch_same_host)
    assert torch.equal(stored["data"], blob[:, :, :, 4:])
    assert received.start == 4 and received.num_tokens == 37 and received.first_token == 5
    assert sent == received.nbytes == blob[:, :, :, 4:].numel() * 2
    assert received.data is None  # only valid inside store (it may map shared memory)


async def test_same_host_handoff_uses_shared_memory_and_frees_it(monkeypatch):
    """The shm path really is taken (store sees a tensor over a /dev/shm mapping) and the
    segment is unlinked after the acknowledgement."""
    from ppd_engine import kv_handoff

    names = []
    publish = kv_handoff.publish

    def spy(data):
        descriptor, release = publish(data)
        names.append(descriptor["name"])
        return descriptor, release

    monkeypatch.setattr(kv_handoff, "publish", spy)
    await transfer(kv_blob(), True, True)
    assert len(names) == 1
    assert not os.path.exists(f"/dev/shm/{names[0].lstrip('/')}")


async def test_a_failing_kv_read_fails_both_sides_fast():
    """Injected failure: reading the KV raises a TypeError (what .numpy() on a CUDA tensor
    raised). The decode gets an error frame at once and the prefill's send fails, instead of
    both waiting out the 60 s timeout."""
    server = BootstrapServer("127.0.0.1", 0, TIMEOUT)
    await server.start()

    def broken(start, end):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    async def store(_):
        raise AssertionError("nothing must be stored")

    try:
        send = asyncio.ensure_future(server.send(3, PrefillResult(1, 8, 0, broken)))
        with pytest.raises(TransferError, match="numpy"):
            await asyncio.wait_for(fetch_kv("127.0.0.1", server.port, 3, 0, TIMEOUT, store), 10)
        with pytest.raises(TransferError, match="numpy"):
            await asyncio.wait_for(send, 10)
    finally:
        await server.close()


async def test_an_unreadable_handoff_fails_the_fetch_fast():
    """The header names a shared-memory segment that does not exist (e.g. another /dev/shm):
    a TransferError, not a hang or a traceback."""

    async def serve(reader, writer):
        from ppd_engine.kv_transfer import read_frame, write_frame

        await read_frame(reader)
        await write_frame(
            writer,
            {
                "ok": True,
                "first_token": 1,
                "start": 0,
                "num_tokens": 4,
                "prefill_cached_tokens": 0,
                "dtype": "bfloat16",
                "shape": [4],
                "nbytes": 8,
                "handoff": {"kind": "shm", "name": "ppd-no-such-seg", "nbytes": 8},
            },
        )
        await reader.read()
        writer.close()

    peer = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]

    async def store(_):
        raise AssertionError("nothing must be stored")

    try:
        with pytest.raises(TransferError):
            await asyncio.wait_for(fetch_kv("127.0.0.1", port, 1, 0, TIMEOUT, store), 10)
    finally:
        peer.close()
        await peer.wait_closed()


# --- a decode worker must refuse KV for a prompt of another length than its
# own (the two sides got different prompts: a router bug, or a P/D pair with different
# tokenizers/templates) with a clear 503, instead of decoding from mismatched KV.

GREEDY = {"temperature": 0, "max_new_tokens": 4}


async def test_decode_refuses_kv_of_a_different_prompt_length(prefill):
    p_client, p_worker = prefill
    async with serve_worker(disaggregation_mode="decode") as (d_client, _):
        boot = {
            "bootstrap_host": "127.0.0.1",
            "bootstrap_port": p_worker.bootstrap.port,
            "bootstrap_room": random.randrange(2**63),
            "sampling_params": GREEDY,
        }
        p_resp, d_resp = await asyncio.gather(
            p_client.post("/generate", json={"text": "short prompt", **boot}),
            d_client.post("/generate", json={"text": "a considerably longer prompt on the decode side", **boot}),
        )
        assert d_resp.status == 503, await d_resp.text()
        assert "prompt" in (await d_resp.json())["error"]["message"]
        assert p_resp.status == 503, await p_resp.text()


# --- a decode request whose KV fetch fails in an unexpected way (a malformed
# header from the prefill peer) must end with a 503, not hang in AWAITING_KV forever.


async def _malformed_prefill_peer():
    async def serve(reader, writer):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(size)
        header = json.dumps(
            {
                "ok": True,
                "first_token": 1,
                "start": 0,
                "num_tokens": 4,
                "prefill_cached_tokens": 0,
                "dtype": "no_such_dtype",
                "shape": [4],
                "nbytes": 4,
            }
        ).encode()
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
            body = {
                "text": "hello there",
                "sampling_params": {"temperature": 0, "max_new_tokens": 4},
                "bootstrap_host": "127.0.0.1",
                "bootstrap_port": port,
                "bootstrap_room": 7,
            }
            # bounded so a hang fails the test instead of blocking the suite
            r = await asyncio.wait_for(client.post("/generate", json=body), 30)
            assert r.status == 503, await r.text()
            assert "KV" in (await r.json())["error"]["message"]
            assert worker.scheduler.num_running == 0
    finally:
        server.close()
        await server.wait_closed()
