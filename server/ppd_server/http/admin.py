"""Admin API under /admin: workers with their load, sessions, and the routing policy.

``PUT /admin/policy`` takes ``{"spec": "ppd", "params": {...}}`` (both optional), builds a new
immutable policy with ``make_policy`` and swaps it in; a bad spec or parameter is a 400 naming it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ppd_server.errors import bad_request, error_response
from ppd_server.routing.policies import POLICY_NAMES, make_policy

if TYPE_CHECKING:
    from ppd_server.http.state import AppState


def _policy_body(state: AppState) -> dict[str, Any]:
    p = state.turns.policy
    return {"spec": p.spec, "params": p.params, "available": list(POLICY_NAMES)}


def add_admin_routes(app: web.Application, state: AppState) -> None:
    async def workers(request: web.Request) -> web.Response:
        return web.json_response({"workers": [w.as_dict() for w in state.registry]})

    async def sessions(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return error_response(bad_request("limit must be an integer", param="limit"))
        return web.json_response(
            {"count": len(state.turns.sessions), "sessions": state.turns.sessions.snapshot(max(0, min(limit, 10_000)))}
        )

    async def get_policy(request: web.Request) -> web.Response:
        return web.json_response(_policy_body(state))

    async def put_policy(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(bad_request("could not parse the JSON body", code="invalid_json"))
        if not isinstance(body, dict) or set(body) - {"spec", "params"}:
            return error_response(bad_request("body must be an object with 'spec' and/or 'params'", param="spec"))
        current = state.turns.policy
        spec = body.get("spec", current.spec)
        params = body.get("params")
        if not isinstance(spec, str):
            return error_response(bad_request("spec must be a string", param="spec"))
        if params is not None and not isinstance(params, dict):
            return error_response(bad_request("params must be an object", param="params"))
        merged = dict(current.params) if spec == current.spec else {}
        merged.update(params or {})
        try:
            policy = make_policy(spec, **merged)
        except (ValueError, TypeError) as e:
            return error_response(bad_request(str(e), param="params" if params else "spec", code="invalid_policy"))
        state.turns.policy = policy
        return web.json_response(_policy_body(state))

    async def cost_model(request: web.Request) -> web.Response:
        cm = state.turns.cost_model
        return web.json_response(
            {
                "error_summary": cm.error_summary(),
                "coefficients": {
                    w.url: _coeffs(cm.coefficients(w.url, w.role, w.served_model_name)) for w in state.registry
                },
                "time": time.time(),
            }
        )

    app.router.add_get("/admin/workers", workers)
    app.router.add_get("/admin/sessions", sessions)
    app.router.add_get("/admin/policy", get_policy)
    app.router.add_put("/admin/policy", put_policy)
    app.router.add_get("/admin/cost_model", cost_model)


def _coeffs(c: Any) -> dict[str, float]:
    from dataclasses import asdict

    return asdict(c)
