"""The router's HTTP/1.1 worker client: body framings, keep-alive reuse, stale connections,
timeouts, aborts."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_server.request_path.upstream import UpstreamError, UpstreamPool


class RawServer:
    """A loopback server whose answers are given as raw bytes per request (in order)."""

    def __init__(self, answers: list[bytes], close_after_each: bool = False) -> None:
        self.answers = answers
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0
        self.disconnected = asyncio.Event()
        self.got_request = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                header = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                length = int(header.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                self.got_request.set()
                answer = self.answers.pop(0)
                if answer == b"HANG":
                    await reader.read()  # wait until the client goes away
                    self.disconnected.set()
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.disconnected.set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n3\r\n 1\n\r\n0\r\n\r\n"
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"


async def test_framings_and_keep_alive_reuse():
    server = RawServer([OK, CHUNKED, OK])
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    async with server as url:
        r = await pool.post(url, "/v1/chat/completions", b'{"a":1}', {"Content-Type": "application/json"})
        assert (r.status, await r.read()) == (200, b"{}")
        r = await pool.post(url, "/generate", b"{}", {})
        # two HTTP chunks the worker sent at once come out as one piece (one write to the client)
        assert [c async for c in r.iter_chunks()] == [b"data: 1\n"]
        r = await pool.post(url, "/generate", b"{}", {"x-request-id": "r1"})
        assert await r.read() == b"{}"
        assert server.connections == 1, "one keep-alive connection served all three"
        assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"x-request-id: r1\r\n" in server.requests[2] and server.requests[0].endswith(b'{"a":1}')
    await pool.close()


async def test_until_close_body_and_connection_not_reused():
    server = RawServer([UNTIL_CLOSE, OK], close_after_each=True)
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    async with server as url:
        r = await pool.post(url, "/x", b"{}", {})
        assert await r.read() == b"hello"
        r = await pool.post(url, "/x", b"{}", {})  # a stale pooled connection is never used
        assert await r.read() == b"{}" and server.connections == 2
    await pool.close()


async def test_idle_connection_closed_by_the_worker_is_retried_on_a_fresh_one():
    server = RawServer([OK, OK], close_after_each=True)  # answers with Content-Length, then closes
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    async with server as url:
        assert await (await pool.post(url, "/x", b"{}", {})).read() == b"{}"
        await asyncio.sleep(0.05)  # let the server's close arrive while the connection is idle
        assert await (await pool.post(url, "/x", b"{}", {})).read() == b"{}"
        assert server.connections == 2
    await pool.close()


async def test_connect_error_timeout_and_truncation_are_upstream_errors():
    pool = UpstreamPool(connect_timeout=2, read_timeout=0.3)
    server = RawServer([])
    async with server as url:
        pass  # closed: nothing listens there now
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.post(url, "/x", b"{}", {})
    async with RawServer([b"HANG"]) as url:
        with pytest.raises(UpstreamError, match="Timeout"):
            await pool.post(url, "/x", b"{}", {})
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    async with RawServer([truncated], close_after_each=True) as url:
        r = await pool.post(url, "/x", b"{}", {})
        with pytest.raises(UpstreamError):
            await r.read()
    await pool.close()


async def test_close_aborts_the_request_at_the_worker():
    server = RawServer([b"HANG"])
    pool = UpstreamPool(connect_timeout=2, read_timeout=30)
    async with server as url:
        task = asyncio.create_task(pool.post(url, "/x", b"{}", {}))
        await asyncio.wait_for(server.got_request.wait(), timeout=10)
        task.cancel()  # e.g. the paired prefill failed
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.disconnected.wait(), timeout=10)
    await pool.close()


# ------------------------------------------------------------------------------------------------
# Forwarded client headers (x-request-id, x-correlation-id, trace headers with tracing off) that
# carry non-latin-1 UTF-8 bytes reach the worker byte for byte instead of failing the request with
# a 500 (the upstream client encoded its request head as latin-1).


@pytest.mark.parametrize("name", ["x-request-id", "x-correlation-id", "traceparent"])
async def test_a_utf8_forwarded_header_is_relayed_not_a_500(name):
    u = FakeWorker(role="unified")
    async with router_over([u]) as (client, state):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        body = json.dumps(chat_body()).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            + name.encode()
            + b": id-\xe2\x82\xac\r\n"  # the euro sign, UTF-8
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[-300:]
        assert len(u.seen) == 1 and u.seen[0].headers[name].encode("utf-8", "surrogateescape") == b"id-\xe2\x82\xac"


# ------------------------------------------------------------------------------------------------
# A worker URL with a path prefix (a worker behind a path-routing proxy, e.g.
# http://host:port/w1 - accepted by the config, and kept by the poller's /server_info and load
# calls) keeps that prefix on the request path too; it was dropped, so requests hit /v1/... and 404'd.


async def test_the_worker_urls_path_prefix_is_kept():
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/w1/v1/chat/completions", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    pool = UpstreamPool(connect_timeout=5, read_timeout=5)
    try:
        base = str(server.make_url("/w1"))
        for url in (base, base + "/"):
            resp = await pool.post(url, "/v1/chat/completions", b"{}", {"Content-Type": "application/json"})
            assert resp.status == 200, await resp.read()
            assert await resp.read() == b'{"ok": true}'
            resp.release()
        assert seen == ["/w1/v1/chat/completions"] * 2
    finally:
        await pool.close()
        await server.close()


async def test_a_chunk_is_yielded_as_soon_as_it_arrives_never_held_for_the_next():
    """Coalescing takes only chunks already received: the first event is relayed while the worker
    has not even sent the second (a paced stream keeps its token-by-token latency)."""
    sent_second = asyncio.Event()
    may_send = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await may_send.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        sent_second.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    r = await pool.post(f"http://127.0.0.1:{port}", "/generate", b"{}", {})
    chunks = r.iter_chunks()
    assert await asyncio.wait_for(chunks.__anext__(), 5) == b"first"
    assert not sent_second.is_set()
    may_send.set()
    assert [c async for c in chunks] == [b"second"]
    await pool.close()
    server.close()
    await server.wait_closed()


def test_whole_chunks_are_scanned_from_the_buffer_up_to_the_first_partial_one():
    from ppd_server.request_path.upstream import _scan_chunks

    burst = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n"
    assert _scan_chunks(bytearray(burst + b"a\r\npart")) == (len(burst), [(3, 8), (19, 22)], False)
    # the last chunk ends the body only with its (possibly non-empty) trailers complete
    assert _scan_chunks(bytearray(burst + b"0\r\n")) == (len(burst), [(3, 8), (19, 22)], False)
    done = burst + b"0\r\nx-t: 1\r\n\r\n"
    assert _scan_chunks(bytearray(done + b"NEXT")) == (len(done), [(3, 8), (19, 22)], True)
    # a size line it cannot parse stops the scan there (the waiting read raises on it)
    assert _scan_chunks(bytearray(b"2\r\nok\r\nzz\r\n")) == (7, [(3, 5)], False)
    assert _scan_chunks(bytearray(b"-1\r\nok\r\n")) == (0, [], False)


async def test_a_burst_of_chunks_with_trailers_is_one_piece_and_the_connection_is_reused():
    burst = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(e), e) for e in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")
    )
    server = RawServer([burst + b"0\r\nx-trailer: t\r\n\r\n", OK])
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    async with server as url:
        r = await pool.post(url, "/generate", b"{}", {})
        assert [c async for c in r.iter_chunks()] == [b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"]
        r = await pool.post(url, "/generate", b"{}", {})
        assert await r.read() == b"{}"
        assert server.connections == 1
    await pool.close()


async def test_a_whole_chunked_answer_is_read_at_once_and_a_late_one_chunk_by_chunk():
    """read() of a chunked answer: already received whole (extensions, trailers) it is taken in
    one read; arriving piece by piece it goes through the chunk reader; both de-chunk the same
    bytes and give the connection back."""
    events = (b"data: 1\n\n", b"data: [DONE]\n\n")
    whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(e), e) for e in events
    )
    server = RawServer([whole + b"0\r\nx-trailer: t\r\n\r\n", OK])
    pool = UpstreamPool(connect_timeout=2, read_timeout=5)
    async with server as url:
        r = await pool.post(url, "/generate", b"{}", {})
        await asyncio.sleep(0.05)  # the whole answer is in the reader's buffer
        assert await r.read() == b"hello" + b"".join(events)
        assert await (await pool.post(url, "/generate", b"{}", {})).read() == b"{}"
        assert server.connections == 1
    await pool.close()


async def test_the_header_timeout_bounds_the_wait_for_headers_only():
    pool = UpstreamPool(connect_timeout=2, read_timeout=30)
    async with RawServer([b"HANG"]) as url:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError, match=r"HeaderTimeout: no response headers within 0\.2 s"):
            await pool.post(url, "/x", b"{}", {}, header_timeout=0.2)
        assert asyncio.get_running_loop().time() - t0 < 15  # not the 30 s read timeout
    await pool.close()
