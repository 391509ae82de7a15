"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}``.

Every 4xx/5xx the router produces goes through :func:`error_response` (plain JSON) or
:func:`sse_error_event` (inside an already-started stream), so clients always get the same
shape, including the real ``openai`` client, which maps the status to its exception class.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
}


class RouterError(Exception):
    """An error the router answers with a given status and OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        retryable: bool = False,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status, "server_error")
        self.retryable = retryable
        self.retry_after_s = retry_after_s  # 429/503: sent as Retry-After (seconds)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(err: RouterError, headers: dict[str, str] | None = None) -> web.Response:
    if err.retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, int(err.retry_after_s)))}
    return web.Response(
        status=err.status, body=json.dumps(err.body()).encode(), content_type="application/json", headers=headers
    )


def sse_error_event(err: RouterError) -> bytes:
    """The error event plus ``[DONE]``, as SGLang itself ends a stream that failed mid-way."""
    body = err.body()
    body["error"]["retryable"] = err.retryable
    return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"


def make_error_middleware(log):
    """Every answer the router itself produces is OpenAI-style: unknown paths and methods become
    JSON 404/405, and an unexpected exception is logged and answered 500 JSON (no traceback)."""

    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return error_response(
                RouterError(
                    e.status,
                    f"{e.reason}: {request.method} {request.path}",
                    code="not_found" if e.status == 404 else None,
                )
            )
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(RouterError(500, "internal router error (see the router log)", code="internal_error"))

    return errors


def bad_request(message: str, param: str | None = None, code: str | None = None) -> RouterError:
    return RouterError(400, message, param=param, code=code)
