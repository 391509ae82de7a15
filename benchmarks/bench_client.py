"""The load generator of the router benchmarks: a raw asyncio HTTP/1.1 keep-alive client, cheap
enough not to be the bottleneck, that sends a canned POST and reads the whole answer
(Content-Length or chunked), and the two measurements built on it: sequential latency and
closed-loop throughput over N connections."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable

BODY = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
STREAM_BODY = json.dumps(
    {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
MODES = (("non-streaming", BODY), ("streaming", STREAM_BODY))


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    def request_bytes(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        ).encode() + body

    async def call(self, request: bytes, keep_body: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, lower-cased headers, body - de-chunked, only if ``keep_body``)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        parts = []
        if "content-length" in headers:
            parts.append(await self.reader.readexactly(int(headers["content-length"])))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if keep_body:
                    parts.append(data[:-2])
        return status, headers, b"".join(parts) if keep_body else b""

    def close(self) -> None:
        self.writer.close()


async def connect(url: str) -> Conn:
    host = url.split("//", 1)[1].rstrip("/")
    h, p = host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(h, int(p), limit=1 << 20)
    return Conn(reader, writer, host)


async def measure_latency(url: str, n: int, body: bytes) -> list[float]:
    """``n`` sequential requests on one connection (after up to 200 warm-up ones): latencies in ms."""
    conn = await connect(url)
    request = conn.request_bytes("/v1/chat/completions", body)
    for _ in range(min(200, n)):
        await conn.call(request)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _, _ = await conn.call(request)
        out.append((time.perf_counter() - t0) * 1000.0)
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
    conn.close()
    return out


async def measure_throughput(
    url: str, concurrency: int, seconds: float, body: bytes, cpu: Callable[[], float] | None = None
) -> tuple[float, int, float | None]:
    """``concurrency`` connections, each sending the next request as soon as the last is answered,
    for ``seconds`` after a 0.5 s warm-up: (requests/s, errors, CPU seconds per request - ``cpu()``
    read when counting starts and after the last answer; None without ``cpu``)."""
    conns = [await connect(url) for _ in range(concurrency)]
    counting = False
    done = errors = 0
    stop_at = time.perf_counter() + 0.5 + seconds

    async def loop(c: Conn) -> None:
        nonlocal done, errors
        request = c.request_bytes("/v1/chat/completions", body)
        while time.perf_counter() < stop_at:
            status, _, _ = await c.call(request)
            if counting:
                done += status == 200
                errors += status != 200

    tasks = [asyncio.create_task(loop(c)) for c in conns]
    await asyncio.sleep(0.5)
    counting, t0 = True, time.perf_counter()
    cpu0 = cpu() if cpu else 0.0
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 30)
    elapsed = time.perf_counter() - t0
    per_request = (cpu() - cpu0) / max(1, done + errors) if cpu else None
    for c in conns:
        c.close()
    return done / elapsed, errors, per_request


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]
