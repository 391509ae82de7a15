"""aiohttp's client behind the router's upstream interface, for ``router_overhead.py`` only: the
same ``post`` -> response (``status``, lower-cased ``headers``, ``iter_chunks``, ``read``,
``release``, ``close``) contract as ``ppd_server.request_path.upstream.UpstreamPool``, so the
benchmark can run the real router with either client and compare them side by side.

Configured the way a careful router would: one session, an unlimited keep-alive connector, no
cookie jar, no automatic headers or decompression, timeouts on connect and on each read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from ppd_server.request_path.upstream import UpstreamError


class AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.close()
            raise UpstreamError(f"{type(e).__name__}: {e}") from None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks()])

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpPool:
    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def post(self, base_url: str, path: str, body: bytes, headers: dict[str, str]) -> AiohttpResponse:
        try:
            resp = await self._client().post(base_url.rstrip("/") + path, data=body, headers=headers)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise UpstreamError(f"{type(e).__name__}: {e}") from None
        return AiohttpResponse(resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
