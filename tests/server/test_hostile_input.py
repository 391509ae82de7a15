"""Hostile input at the router's front door: every answer is a 4xx with an OpenAI error body
(``{"error": {"message", "type", "param", "code"}}``), never a 5xx, a plain-text page, a dropped
connection or a hang - including what aiohttp itself rejects while parsing (oversized header
lines, malformed request lines), since the router serves through ``RouterRunner``.

The router runs as in production (``ppd_server.http.serve.make_runner`` on a loopback port) over
in-process fake SGLang workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body

from ppd_server.config import PrefillSpec, RouterConfig
from ppd_server.http.app import create_app
from ppd_server.http.serve import make_runner


@asynccontextmanager
async def served_router(port: int = 0, **config: Any) -> AsyncIterator[str]:
    """A router served like ``ppd-server`` does, over a fake P/D pair; yields its base URL."""
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    for w in (p, d):
        await w.start()
    cfg = RouterConfig(
        prefill=(PrefillSpec(p.url, p.bootstrap_port),), decode=(d.url,), load_interval_s=3600.0, **config
    )
    runner = make_runner(create_app(cfg), drain_timeout_s=2.0, max_header_bytes=cfg.max_header_bytes)
    await runner.setup()
    from aiohttp import web

    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        for w in (p, d):
            await w.close()


def _ok_error_body(text: str) -> dict[str, Any]:
    err = json.loads(text)["error"]
    assert set(err) >= {"message", "type", "param", "code"} and isinstance(err["message"], str)
    return err


def _raw(body: bytes) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": "application/json"}}


NAN_SLO = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"ppd":{"slo":{"ttft_ms":NaN}}}'
INF_SLO = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"ppd":{"slo":{"tpot_ms":Infinity}}}'
NAN_WEIGHT = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"ppd":{"weights":{"ttft":NaN}}}'
CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    # (id, aiohttp request kwargs, status, param)
    ("nested-arrays-100k", _raw(b"[" * 100_000), 400, None),
    ("nested-objects-50k", _raw(b'{"a":' * 50_000), 400, None),
    ("invalid-utf8", _raw(b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}'), 400, None),
    ("stream-yes", {"json": chat_body(stream="yes")}, 400, "stream"),
    ("stream-1", {"json": chat_body(stream=1)}, 400, "stream"),
    ("max-tokens-huge", {"json": chat_body(max_tokens=10**30)}, 400, "max_tokens"),
    ("max-tokens-float", {"json": chat_body(max_tokens=2.5)}, 400, "max_tokens"),
    ("max-tokens-string", {"json": chat_body(max_tokens="12")}, 400, "max_tokens"),
    ("max-tokens-bool", {"json": chat_body(max_tokens=True)}, 400, "max_tokens"),
    ("slo-nan", _raw(NAN_SLO), 400, "ppd.slo"),
    ("slo-infinity", _raw(INF_SLO), 400, "ppd.slo"),
    ("slo-negative", {"json": chat_body(ppd={"slo": {"ttft_ms": -1}})}, 400, "ppd.slo"),
    ("weight-nan", _raw(NAN_WEIGHT), 400, "ppd.weights"),
    ("slo-header-nan", {"json": chat_body(), "headers": {"X-SLO-TTFT-Ms": "nan"}}, 400, "X-SLO-TTFT-Ms"),
    ("slo-header-inf", {"json": chat_body(), "headers": {"X-SLO-TPOT-Ms": "inf"}}, 400, "X-SLO-TPOT-Ms"),
    ("slo-header-negative", {"json": chat_body(), "headers": {"X-SLO-TPOT-Ms": "-3"}}, 400, "X-SLO-TPOT-Ms"),
    (
        "conv-id-20000-bytes",
        {"json": chat_body(), "headers": {"X-PPD-Conversation-Id": "a" * 20_000}},
        400,
        "X-PPD-Conversation-Id",
    ),
    ("conv-id-crlf-in-body", {"json": chat_body(prompt_cache_key="a\r\nSet-Cookie: x=y")}, 400, None),
    ("conv-id-lf-in-ppd", {"json": chat_body(ppd={"conversation_id": "a\nX-Evil: 1"})}, 400, "ppd.conversation_id"),
    (
        "parent-id-nul",
        {"json": chat_body(ppd={"conversation_id": "c", "parent_conversation_id": "p\x00"})},
        400,
        "ppd.parent_conversation_id",
    ),
    ("body-not-object", _raw(b'"hello"'), 400, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_hostile_body_or_header_is_an_openai_4xx(case):
    _, kwargs, status, param = case
    async with served_router() as url, aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/chat/completions", **kwargs) as r:
            text = await r.text()
            assert r.status == status, text[:300]
            assert r.content_type == "application/json"
            err = _ok_error_body(text)
            if param is not None:
                assert err["param"] == param
        # the router still serves afterwards
        async with http.post(url + "/v1/chat/completions", json=chat_body()) as r:
            assert r.status == 200


async def _raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "what,request_bytes,status",
    [
        (
            "header-line-over-limit",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-PPD-Conversation-Id: "
            + b"a" * 40_000
            + b"\r\nContent-Length: 2\r\n\r\n{}",
            431,
        ),
        ("request-line-over-limit", b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        ("malformed-request-line", b"GARBAGE\r\n\r\n", 400),
        ("bad-content-length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ],
)
async def test_aiohttp_protocol_errors_are_openai_shaped(what, request_bytes, status):
    async with served_router() as url:
        code, headers, body = await _raw_http(url, request_bytes)
        assert code == status, body[:300]
        assert headers.get("content-type", "").startswith("application/json")
        _ok_error_body(body.decode())


async def test_body_over_the_size_limit_is_an_openai_413():
    async with served_router() as url, aiohttp.ClientSession() as http:
        big = b'{"model":"m","messages":[{"role":"user","content":"' + b"a" * (65 * 1024 * 1024) + b'"}]}'
        async with http.post(url + "/v1/chat/completions", **_raw(big)) as r:
            assert r.status == 413
            _ok_error_body(await r.text())


async def test_a_legal_20kb_header_elsewhere_is_accepted():
    """The raised header limit lets a long legal header through (aiohttp's default is 8 KiB)."""
    async with (
        served_router() as url,
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/chat/completions", json=chat_body(), headers={"X-Client-Note": "c" * 20_000}) as r,
    ):  # not forwarded
        assert r.status == 200


async def test_openapi_json_describes_the_front_door():
    async with (
        served_router(api_key="k") as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/openapi.json") as r,  # public: no key needed to read the schema
    ):
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/chat/completions", "/v1/completions", "/generate", "/v1/models", "/health"} <= set(doc["paths"])
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "X-PPD-Conversation-Id" in {p["name"] for p in chat["parameters"]}
    assert chat["requestBody"]["content"]["application/json"]["schema"]["properties"]["stream"]["type"] == "boolean"


async def test_protocol_garbage_is_not_logged_with_a_traceback(caplog):
    async with served_router() as url:
        code, _, _ = await _raw_http(url, b"GARBAGE\r\n\r\n")
    assert code == 400
    assert not [r for r in caplog.records if r.exc_info]


if __name__ == "__main__":
    # A router over fake workers on a fixed loopback port, for schemathesis (docs/operations.md):
    #   python tests/server/test_hostile_input.py 38123 &
    #   schemathesis run http://127.0.0.1:38123/openapi.json --checks not_a_server_error -n 300 -w 1
    import sys

    async def _serve_forever(port: int) -> None:
        async with served_router(port=port) as url:
            print(f"serving on {url}", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(_serve_forever(int(sys.argv[1])))
