"""Who may call what, per route, generated from the app's own route table.

A route added to the app without an access class in ``ROUTE_ACCESS`` fails
``test_every_route_has_an_access_decision``; each route is then called with no key, a wrong key,
each API key and the admin key, and must let in exactly the callers its class allows.
"""

from __future__ import annotations

import hmac

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_server.cli import main
from ppd_server.config import ConfigError, RouterConfig, load_config
from ppd_server.http import auth
from ppd_server.http.app import create_app

API_KEYS = ("sk-tenant-a-7f3c9e", "sk-tenant-b-1d2e4a")
ADMIN_KEY = "adm-9b8c7d6e"


def _route_table() -> list[tuple[str, str]]:
    app = create_app(RouterConfig(worker=("http://127.0.0.1:9",), api_key=API_KEYS, admin_key=ADMIN_KEY))
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"})


ROUTES = _route_table()


def _body(path: str) -> dict:
    if path == "/generate":
        return {"text": "Hello", "sampling_params": {"max_new_tokens": 3}}
    if path == "/v1/completions":
        return {"model": "fake-model", "prompt": "Hello", "max_tokens": 3}
    if path == "/admin/policy":
        return {}
    return chat_body()


async def _call(client, method: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if method in ("POST", "PUT"):
        r = await client.request(method, path, json=_body(path), headers=headers)
    else:
        r = await client.request(method, path, headers=headers)
    text = await r.text()
    for k in (*API_KEYS, ADMIN_KEY):
        assert k not in text, "a key is never echoed"
    return r.status


def test_every_route_has_an_access_decision():
    undecided = [(m, p) for m, p in ROUTES if p not in auth.ROUTE_ACCESS]
    assert not undecided, f"routes without an access class in http/auth.py ROUTE_ACCESS: {undecided}"
    assert len(ROUTES) >= 15
    assert not set(auth.ROUTE_ACCESS) - {p for _, p in ROUTES}, "ROUTE_ACCESS names a route the app lacks"


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_route_admits_exactly_its_callers(method, path):
    access = auth.ROUTE_ACCESS.get(path, "admin")
    u = FakeWorker(role="unified")
    async with router_over([u], api_key=API_KEYS, admin_key=ADMIN_KEY) as (client, _):
        callers = {"none": None, "wrong": "sk-wrong", "near": API_KEYS[0] + "x", "a": API_KEYS[0]}
        callers |= {"b": API_KEYS[1], "admin": ADMIN_KEY}
        got = {name: await _call(client, method, path, key) for name, key in callers.items()}
    allowed = {"public": set(callers), "api": {"a", "b"}, "admin": {"admin"}}[access]
    for name, status in got.items():
        if name in allowed:
            assert status not in (401, 403), (name, status)
        else:
            assert status == 401, (name, status)


@pytest.mark.parametrize("path", sorted(p for p, a in auth.ROUTE_ACCESS.items() if a == "admin"))
async def test_admin_routes_are_closed_with_api_keys_but_no_admin_key(path):
    method = next(m for m, p in ROUTES if p == path)
    async with router_over([FakeWorker(role="unified")], api_key=API_KEYS) as (client, _):
        for key in (None, API_KEYS[0], API_KEYS[1]):
            assert await _call(client, method, path, key) == 403
    async with router_over([FakeWorker(role="unified")]) as (client, _):  # no key at all: a dev router, open
        assert await _call(client, method, path, None) not in (401, 403)


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    ring = auth.KeyRing(["k1", "k2", "k3"])

    class Req:
        def __init__(self, header: str) -> None:
            self.headers = {"Authorization": header}

    for header, want in (
        ("Bearer k1", auth.key_id("k1")),
        ("Bearer k3", auth.key_id("k3")),
        ("Bearer nope", None),
        ("Basic k1", None),
        ("", None),
    ):
        calls.clear()
        assert ring.match(Req(header)) == want  # type: ignore[arg-type]
        assert len(calls) == 3, "every key is compared, whatever matched"
        assert {len(a) for a, _ in calls} == {32}, "fixed-length digests, not the raw token"


def test_several_api_keys_from_flags_and_a_file(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# tenants\nsk-c\n\nsk-d\nsk-a\n")
    cfg = load_config({"api_key": ["sk-a", "sk-b"], "api_key_file": str(f)}, environ={})
    assert cfg.api_keys() == ("sk-a", "sk-b", "sk-c", "sk-d")
    assert load_config({}, environ={"PPD_API_KEY": "sk,with,commas"}).api_keys() == ("sk,with,commas",)
    assert "sk-a" not in repr(cfg), "keys stay out of the config's repr"
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    for bad in ({"api_key_file": str(empty)}, {"api_key_file": str(tmp_path / "missing")}):
        with pytest.raises(ConfigError) as e:
            load_config(bad, environ={})
        assert e.value.field == "api_key_file"
    with pytest.raises(ConfigError):
        load_config({"api_key": ["two words"]}, environ={})


def test_cli_names_a_missing_key_file_in_one_line(capsys, tmp_path):
    assert main(["--worker", "http://127.0.0.1:9", "--api-key-file", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "api_key_file" in err and "Traceback" not in err
