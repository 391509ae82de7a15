"""What the SGLang-native (``http_api``) and OpenAI (``openai_api``) endpoints of a ppd-worker
share: the app key of the Worker, JSON body reading, the fields common to every generate
request, the meta_info block, engine-error mapping and the SSE relay. Both API modules import
this one; neither imports the other's handlers (``http_api.create_app`` assembles the app)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any, TypeGuard

from aiohttp import web

from .errors import InvalidRequest
from .request import Bootstrap, GenerateInput, Result
from .sampling import SamplingParams
from .worker import Worker

WORKER = web.AppKey("worker", Worker)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def parse_bootstrap(body: dict[str, Any]) -> Bootstrap | None:
    host, port, room = body.get("bootstrap_host"), body.get("bootstrap_port"), body.get("bootstrap_room")
    if room is None and host is None:
        return None
    if any(isinstance(v, list) for v in (host, port, room)):
        raise InvalidRequest(
            "batched bootstrap fields are not supported (one request per call)", param="bootstrap_room"
        )
    if not isinstance(host, str) or not host:
        raise InvalidRequest("bootstrap_host must be a host name", param="bootstrap_host")
    if port is not None and (not is_int(port) or not 0 < port < 65536):
        raise InvalidRequest("bootstrap_port must be a TCP port or null", param="bootstrap_port")
    if not is_int(room) or room < 0:
        raise InvalidRequest("bootstrap_room must be a non-negative integer", param="bootstrap_room")
    return Bootstrap(host.strip("[]"), port or 0, room)


def parse_common(body: dict[str, Any], prompt_ids: list[int], sampling: SamplingParams) -> GenerateInput:
    rid = body.get("rid")
    if rid is not None and not isinstance(rid, str):
        raise InvalidRequest("rid must be a string (batches are not supported)", param="rid")
    local = body.get("do_local_prefill", False)
    if not isinstance(local, bool):
        raise InvalidRequest("do_local_prefill must be a boolean", param="do_local_prefill")
    return GenerateInput(prompt_ids, sampling, rid, parse_bootstrap(body), local, parse_cache_salt(body))


MAX_CACHE_SALT_CHARS = 1024


def parse_cache_salt(body: dict[str, Any]) -> str | None:
    """SGLang's / vLLM's ``cache_salt``: requests share cached prefixes only with requests of
    the same salt. Absent, null or "" = the shared namespace."""
    salt = body.get("cache_salt")
    if salt is None or salt == "":
        return None
    if not isinstance(salt, str) or len(salt) > MAX_CACHE_SALT_CHARS:
        raise InvalidRequest(
            f"cache_salt must be a string of at most {MAX_CACHE_SALT_CHARS} characters", param="cache_salt"
        )
    return salt


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def meta_info(result: Result) -> dict[str, Any]:
    req = result.req
    return {
        "id": req.client_rid,
        "finish_reason": result.finish_reason,
        "prompt_tokens": req.prompt_len,
        "completion_tokens": len(result.output_ids),
        "cached_tokens": req.cached_tokens,
        "cached_tokens_details": {"device": req.num_prefix_tokens, "prefill": req.prefill_cached_tokens},
        "kv_transfer_bytes": req.kv_transfer_bytes,
        "reasoning_tokens": 0,
        "weight_version": "default",
        "num_retractions": 0,
        "e2e_latency": time.monotonic() - req.arrival_time,
    }


def raise_if_failed(result: Result) -> None:
    """A request that ended in an engine-side error (e.g. KV transfer) becomes an HTTP error."""
    reason = result.finish_reason or {}
    if reason.get("type") == "abort" and result.req.error:
        raise InvalidRequest(
            result.req.error,
            status=result.req.error_status,
            code="kv_transfer_failed" if "KV" in result.req.error or "bootstrap" in result.req.error else None,
        )


async def stream_sse(
    request: web.Request, results: AsyncGenerator[Result, None], shape, final_chunks=None
) -> web.StreamResponse:
    """Relay ``results`` as SSE (``shape(result)`` -> chunk dict, or None to skip). The first
    result is awaited before the 200 is sent, so validation errors still become 4xx."""
    iterator = results  # an async generator is its own iterator; aclose() below aborts the request
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    result = first
    try:
        while result is not None:
            reason = result.finish_reason or {}
            if reason.get("type") == "abort" and result.req.error:
                await _send(
                    response,
                    {
                        "error": {
                            "message": result.req.error,
                            "type": "server_error",
                            "code": result.req.error_status,
                            "retryable": True,
                        }
                    },
                )
                break
            chunk = shape(result)
            if chunk is not None:
                await _send(response, chunk)
            if result.finished and final_chunks is not None:
                for extra in final_chunks(result):
                    await _send(response, extra)
            try:
                result = await iterator.__anext__()
            except StopAsyncIteration:
                result = None
        await response.write(b"data: [DONE]\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # client went away: closing the generator aborts the request
    finally:
        await iterator.aclose()
    return response


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
