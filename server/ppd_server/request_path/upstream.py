"""A small HTTP/1.1 keep-alive client for the router -> worker hot path.

Why not aiohttp's client (already a dependency): measured, it costs more. A P->D turn makes two
worker calls, and ``benchmarks/router_overhead.py --with-aiohttp-client`` runs the real router
with this client and with aiohttp's (``benchmarks/aiohttp_upstream.py``: one session, unlimited keep-alive connector,
no cookie jar, no auto headers) in place of it, same run, same instant fake workers, router
pinned to one core (``--rounds 3 --skip-sglang``, 2,000 sequential requests, 32 connections x
4 s; a shared 2-core box at load ~10, so the router's CPU time per request is the figure to
trust, latencies are noisy):

==================  ==============  ==============  ===========  ===========
P->D chat request   CPU us/request  CPU us/request  req/s        req/s
                    this client     aiohttp         this client  aiohttp
==================  ==============  ==============  ===========  ===========
non-streaming       460             680 (+48%)      574          385
streaming (SSE)     708             744 (+5%)       362          348
==================  ==============  ==============  ===========  ===========

(The p50 added latency went the same way non-streaming, 3.1 vs 6.2 ms, and was within the
noise streaming.) So this client stays. It does exactly what the router needs and nothing
else: POST a JSON body over a pooled connection, read the status and headers, then the body
(Content-Length, chunked, or until close) either whole (:meth:`read`) or piece by piece as it
arrives (:meth:`iter_chunks`, for SSE relay). :meth:`close` drops the connection, which is how
the router aborts a worker request (the worker sees the disconnect).

Errors are :class:`UpstreamError` (an OSError): connect failures, timeouts (``read_timeout`` per
read; ``post(header_timeout=...)`` for the response headers alone), a connection that breaks
mid-answer. A pooled connection the worker closed while idle is retried once on a fresh
connection when nothing of the answer was received yet.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

_MAX_IDLE_PER_HOST = 256


class _timeout:
    """``asyncio.timeout(delay)`` for one await, at a quarter of its cost (a timer handle and a
    flag, none of Timeout's rescheduling machinery): the request path arms several per turn.
    When the timer fires the task is cancelled; the CancelledError that comes out of the block
    becomes TimeoutError unless someone else cancelled the task too (Python >= 3.11 counts
    cancel requests; 3.10 cannot tell them apart and calls it a timeout)."""

    __slots__ = ("_fired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._task = asyncio.current_task()
        self._fired = False
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._fired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._handle.cancel()
        if self._fired:  # withdraw this timer's cancel request, as asyncio.timeout does
            uncancel = getattr(self._task, "uncancel", None)
            others = uncancel() if uncancel is not None else 0
            if exc_type is asyncio.CancelledError and others == 0:
                raise asyncio.TimeoutError() from None


def _chunk_size(line: bytes | bytearray) -> int:
    """A chunk-size line's value (its extensions ignored; an empty line is 0). Raises ValueError."""
    try:
        return int(line, 16)  # the usual bare hex size (int() skips surrounding whitespace itself)
    except ValueError:
        return int(bytes(line).split(b";", 1)[0].strip() or b"0", 16)


def _has_whole_chunk(reader: asyncio.StreamReader) -> bool:
    """Whether the bytes the reader already holds contain a whole HTTP/1.1 chunk (or the last,
    empty one): reading it then completes without waiting for the network. Peeks at
    StreamReader's buffer (CPython's ``_buffer``, a bytearray, stable since 3.4); False when
    it cannot tell, which only costs one more write."""
    buf = getattr(reader, "_buffer", None)
    if not buf:
        return False
    eol = buf.find(b"\r\n")
    if eol < 0:
        return False
    try:
        size = _chunk_size(buf[:eol])
    except ValueError:
        return True  # let the normal path raise on it
    if size == 0:
        return buf.find(b"\r\n\r\n", eol) >= 0  # last chunk and the end of its (empty) trailers
    return len(buf) >= eol + 2 + size + 2


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes the reader already holds (0 when it cannot tell): reading that many never waits."""
    buf = getattr(reader, "_buffer", None)
    return len(buf) if buf is not None else 0


def _scan_chunks(buf: bytearray) -> tuple[int, list[tuple[int, int]], bool]:
    """The whole chunks at the start of ``buf``: (bytes they take, each one's data span, whether
    the last, empty chunk and its trailers are among them). Stops at the first chunk not whole
    yet, or at one it cannot parse (the waiting path then raises on it)."""
    pos, n = 0, len(buf)
    spans: list[tuple[int, int]] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = _chunk_size(buf[pos:eol])
        except ValueError:
            break
        if size < 0:
            break
        if size == 0:
            trailers_end = buf.find(b"\r\n\r\n", eol)
            if trailers_end < 0:
                break
            return trailers_end + 4, spans, True
        start = eol + 2
        if start + size + 2 > n:
            break
        spans.append((start, start + size))
        pos = start + size + 2
    return pos, spans, False


async def _read_buffered_chunks(reader: asyncio.StreamReader, parts: list[bytes]) -> bool:
    """Every chunk the reader already holds whole, taken in one read that never waits; True
    when the last chunk was among them."""
    buf = getattr(reader, "_buffer", None)
    if not buf:
        return False
    consumed, spans, end = _scan_chunks(buf)
    if consumed:
        data = await reader.readexactly(consumed)
        parts += [data[a:b] for a, b in spans]
    return end


async def _read_chunks(reader: asyncio.StreamReader, parts: list[bytes]) -> bool:
    """At least one chunk, waiting for it; with every further chunk already received whole
    (a burst of events is relayed as one write). True after the last chunk."""
    if await _read_buffered_chunks(reader, parts):
        return True
    if parts:
        return False
    line = await reader.readuntil(b"\r\n")
    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
    if size == 0:
        while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
            pass
        return True
    data = await reader.readexactly(size + 2)
    parts.append(data[:-2])
    return await _read_buffered_chunks(reader, parts)


class UpstreamError(OSError):
    """The worker could not be reached, timed out, or broke the connection."""


class _Conn:
    __slots__ = ("key", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: tuple) -> None:
        self.reader, self.writer, self.key = reader, writer, key

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class UpstreamResponse:
    def __init__(self, pool: UpstreamPool, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self._done = False

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as the worker sends them; raises UpstreamError if the answer breaks off."""
        conn = self._conn
        if conn is None or self._done:
            return
        reader, timeout = conn.reader, self._pool.read_timeout
        te = self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        try:
            if "chunked" in te:
                end = False
                while not end:
                    parts: list[bytes] = []
                    if _has_whole_chunk(reader):  # already here: no timer to arm
                        end = await _read_chunks(reader, parts)
                    else:
                        async with _timeout(timeout):
                            end = await _read_chunks(reader, parts)
                    if parts:
                        yield parts[0] if len(parts) == 1 else b"".join(parts)
            elif length is not None:
                remaining = int(length)
                while remaining > 0:
                    if _buffered(reader) >= remaining:  # the usual small answer: no timer to arm
                        data = await reader.readexactly(remaining)
                    else:
                        async with _timeout(timeout):
                            data = await reader.read(min(remaining, 1 << 16))
                    if not data:
                        raise UpstreamError("connection closed before the end of the answer")
                    remaining -= len(data)
                    yield data
            else:  # no framing: until the worker closes
                while True:
                    async with _timeout(timeout):
                        data = await reader.read(1 << 16)
                    if not data:
                        break
                    yield data
                self.headers["connection"] = "close"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise UpstreamError(f"malformed or truncated answer: {type(e).__name__}") from None
        except (OSError, asyncio.TimeoutError) as e:
            self.close()
            raise UpstreamError(f"{type(e).__name__}: {e}") from None
        except BaseException:
            self.close()
            raise
        self._done = True
        self.release()

    async def read(self) -> bytes:
        """The whole body; raises UpstreamError if the answer breaks off."""
        conn, length = self._conn, self.headers.get("content-length")
        if conn is not None and not self._done and length is not None and length.isdigit():
            n = int(length)
            if _buffered(conn.reader) >= n:  # the usual small answer, already here: read it at once
                data = await conn.reader.readexactly(n)
                self._done = True
                self.release()
                return data
        elif conn is not None and not self._done and "chunked" in self.headers.get("transfer-encoding", "").lower():
            buf = getattr(conn.reader, "_buffer", None)
            if buf:  # a whole chunked answer already here (e.g. a prefill's short stream): one read
                consumed, spans, end = _scan_chunks(buf)
                if end:
                    data = await conn.reader.readexactly(consumed)
                    self._done = True
                    self.release()
                    return b"".join([data[a:b] for a, b in spans])
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if the answer was read to its end, else drop it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self.headers.get("connection", "").lower() != "close":
            self._pool._put(conn)
        else:
            conn.writer.close()

    def close(self) -> None:
        """Drop the connection now (aborts the worker's request if it is still running)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.writer.close()


class UpstreamPool:
    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[tuple, list[_Conn]] = defaultdict(list)
        self._targets: dict[str, tuple] = {}

    def _target(self, base_url: str) -> tuple:
        t = self._targets.get(base_url)
        if t is None:
            parts = urlsplit(base_url)
            tls = parts.scheme == "https"
            host = parts.hostname or "127.0.0.1"
            port = parts.port or (443 if tls else 80)
            t = (host, port, tls, f"{host}:{port}", parts.path.rstrip("/"))  # the URL's path prefix, if any
            self._targets[base_url] = t
        return t

    async def _connect(self, key: tuple) -> _Conn:
        host, port, tls, *_ = key
        try:
            async with _timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls or None)
        except (OSError, asyncio.TimeoutError) as e:
            raise UpstreamError(f"cannot connect to {host}:{port}: {type(e).__name__}: {e}") from None
        return _Conn(reader, writer, key)

    def _put(self, conn: _Conn) -> None:
        idle = self._idle[conn.key]
        if len(idle) < _MAX_IDLE_PER_HOST and conn.usable():
            idle.append(conn)
        else:
            conn.writer.close()

    async def post(
        self, base_url: str, path: str, body: bytes, headers: dict[str, str], header_timeout: float | None = None
    ) -> UpstreamResponse:
        """POST ``body``; the answer's status and headers. ``header_timeout``: the longest wait for
        them (default: ``read_timeout``); past it, UpstreamError('HeaderTimeout: ...')."""
        key = self._target(base_url)
        head = [f"POST {key[4]}{path} HTTP/1.1\r\nHost: {key[3]}\r\nContent-Length: {len(body)}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        # aiohttp decoded the client's header bytes as UTF-8 (surrogateescape): this gives them back as sent
        request = "".join(head).encode("utf-8", "surrogateescape") + b"\r\n" + body
        idle = self._idle[key]
        while idle:
            conn = idle.pop()
            if conn.usable():
                try:
                    return await self._exchange(conn, request, header_timeout=header_timeout)
                except _StaleConnection:
                    continue  # the worker closed it while idle: try another / a fresh one
            else:
                conn.writer.close()
        try:
            return await self._exchange(await self._connect(key), request, fresh=True, header_timeout=header_timeout)
        except _StaleConnection as e:
            raise UpstreamError(str(e)) from None

    async def _exchange(
        self, conn: _Conn, request: bytes, fresh: bool = False, header_timeout: float | None = None
    ) -> UpstreamResponse:
        wait = header_timeout or self.read_timeout
        try:
            conn.writer.write(request)
            if conn.writer.transport.get_write_buffer_size() > 1 << 16:
                await conn.writer.drain()
            async with _timeout(wait):
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            conn.writer.close()
            if not e.partial and not fresh:
                raise _StaleConnection("connection closed before answering") from None
            raise UpstreamError("connection closed before answering") from None
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError) as e:
            conn.writer.close()
            if isinstance(e, ConnectionError) and not fresh:
                raise _StaleConnection(str(e)) from None
            if isinstance(e, asyncio.TimeoutError) and header_timeout:  # "Timeout": a stuck pair (dispatch.py)
                raise UpstreamError(f"HeaderTimeout: no response headers within {wait:g} s") from None
            raise UpstreamError(f"{type(e).__name__}: {e}") from None
        except BaseException:
            conn.writer.close()  # cancelled (e.g. the paired prefill failed): abort the request
            raise
        lines = raw[:-4].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            conn.writer.close()
            raise UpstreamError(f"not an HTTP answer: {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return UpstreamResponse(self, conn, status, headers)

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.writer.close()
        self._idle.clear()


class _StaleConnection(Exception):
    pass
