"""Who may call what: the access class of every route, bearer-key checks, and the tenant of a request.

Every route the app registers has ONE access class in :data:`ROUTE_ACCESS` (keyed by the route's
canonical path); a test walks the app's route table and fails on a route without one, and a route
missing here is treated as ``admin`` at run time (fail closed):

- ``public``: ``/health``, ``/metrics``, ``/openapi.json`` - load balancers, scrapers, schema tools.
- ``api``: the OpenAI and SGLang endpoints; need one of the ``--api-key`` keys when any is set.
- ``admin``: ``/admin/*`` and ``POST /flush_cache`` (it empties every worker's cache, every
  tenant's); need ``--admin-key``. With API keys set but no admin key these answer 403
  ``admin_disabled``: otherwise any caller - any tenant - could read every session's binding or
  swap the policy. With no key at all (a development router) everything is open, as before.

Keys are compared in constant time: the presented token and every configured key are hashed to
SHA-256 digests and compared with ``hmac.compare_digest``, always against every key (no early
exit, so the time does not say which key nearly matched nor how many there are). Keys are never
logged, echoed, forwarded to workers nor stored: a request carries only its tenant id
(:func:`key_id`, a truncated hash) in ``request[TENANT]`` when several API keys are configured,
and the session table is keyed by it (one tenant cannot read or steer another's conversation).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Literal

from aiohttp import web

from ppd_server.errors import RouterError, error_response

Access = Literal["public", "api", "admin"]

ROUTE_ACCESS: dict[str, Access] = {
    "/health": "public",
    "/metrics": "public",
    "/openapi.json": "public",
    "/v1/chat/completions": "api",
    "/v1/completions": "api",
    "/generate": "api",
    "/v1/models": "api",
    "/model_info": "api",
    "/get_model_info": "api",
    "/get_server_info": "api",
    "/flush_cache": "admin",
    "/admin/workers": "admin",
    "/admin/sessions": "admin",
    "/admin/policy": "admin",
    "/admin/cost_model": "admin",
}

TENANT = web.RequestKey("ppd_tenant", str)  # set only when several API keys are configured


def key_id(key: str) -> str:
    """A key's stable public identity (12 hex digits of a domain-separated SHA-256): what the
    session table and the admin API show instead of the key. Keys should be random (>= 128 bits):
    a short guessable key could be found again from its id."""
    return hashlib.sha256(b"ppd-tenant\x00" + key.encode()).hexdigest()[:12]


def tenant_cache_salt(tenant: str, client_salt: str | None) -> str:
    """The ``cache_salt`` the workers get for a tenant's request: workers share cached prefixes only
    between requests of one salt (SGLang's and ppd-worker's radix cache), so tenants cannot observe
    each other's prompts by timing or ``cached_tokens``. Derived, so every replica gives the same
    one; the client's own salt (isolation within the tenant) is folded in, never used as is, so no
    client can choose another tenant's salt."""
    material = b"ppd-cache-salt\x00" + tenant.encode() + b"\x00" + (client_salt or "").encode()
    return "ppd-" + hashlib.sha256(material).hexdigest()[:32]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """A set of bearer keys; :meth:`match` returns the matching key's id in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [(_digest(k), key_id(k)) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        presented = _digest(token.strip() if scheme.lower() == "bearer" else "")
        found = None
        for digest, kid in self._keys:  # every key, every time
            if hmac.compare_digest(presented, digest):
                found = kid
        return found


def access_of(request: web.Request) -> Access | None:
    """The route's access class; None for a request that matched no route (its 404/405)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return ROUTE_ACCESS.get(resource.canonical, "admin")


def make_auth_middleware(api_keys: Iterable[str], admin_key: str | None):
    api = KeyRing(api_keys)
    admin = KeyRing([admin_key] if admin_key is not None else [])
    scoped = len(api) > 1

    @web.middleware
    async def auth(request: web.Request, handler):
        access = access_of(request)
        if access == "admin":
            if admin:
                if admin.match(request) is None:
                    return error_response(
                        RouterError(
                            401, "A valid admin key is required (Authorization: Bearer ...).", code="invalid_admin_key"
                        )
                    )
            elif api:
                return error_response(
                    RouterError(
                        403,
                        "The admin API is disabled: this router has API keys but no --admin-key.",
                        code="admin_disabled",
                    )
                )
        elif access == "api" and api:
            tenant = api.match(request)
            if tenant is None:
                return error_response(RouterError(401, "Incorrect API key provided.", code="invalid_api_key"))
            if scoped:
                request[TENANT] = tenant
        return await handler(request)

    return auth


__all__ = [
    "ROUTE_ACCESS",
    "TENANT",
    "Access",
    "KeyRing",
    "access_of",
    "key_id",
    "make_auth_middleware",
    "tenant_cache_salt",
]
