"""Bearer-key guards: ``--api-key`` for the OpenAI/SGLang endpoints, ``--admin-key`` for /admin.

Keys are compared with ``hmac.compare_digest`` (constant time) and never logged or echoed.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ppd_server.errors import RouterError, error_response

_API_PREFIXES = ("/v1/", "/generate")


def _bearer_ok(request: web.Request, key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return hmac.compare_digest(token.strip().encode(), key.encode())


def make_auth_middleware(api_key: str | None, admin_key: str | None):
    @web.middleware
    async def auth(request: web.Request, handler):
        path = request.path
        if path.startswith("/admin"):
            if admin_key is not None and not _bearer_ok(request, admin_key):
                return error_response(
                    RouterError(
                        401, "A valid admin key is required (Authorization: Bearer ...).", code="invalid_admin_key"
                    )
                )
        elif api_key is not None and path.startswith(_API_PREFIXES) and not _bearer_ok(request, api_key):
            return error_response(RouterError(401, "Incorrect API key provided.", code="invalid_api_key"))
        return await handler(request)

    return auth
