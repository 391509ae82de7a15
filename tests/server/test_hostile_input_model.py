"""``model`` names as SGLang treats them: ``"default"`` and, with one model served, any name
select it; with several models a wrong name is a 404 that lists the served names and never a
worker's file path."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


@pytest.mark.parametrize("model", ["default", "gpt-4o", "fake-model", "/models/fake-model"])
async def test_any_name_selects_the_single_served_model(model):
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(model=model))
        assert r.status == 200, await r.text()


async def test_with_two_models_a_wrong_name_is_a_404_naming_served_models_without_paths():
    workers = [FakeWorker(role="unified", model="alpha"), FakeWorker(role="unified", model="beta")]
    async with router_over(workers) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(model="gamma"))
        assert r.status == 404
        err = (await r.json())["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"
        assert "alpha" in err["message"] and "beta" in err["message"]
        assert "/models/" not in err["message"]  # the workers' model_path stays private
        for name in ("alpha", "beta", "default", "/models/alpha"):
            r = await client.post("/v1/chat/completions", json=chat_body(model=name))
            assert r.status == 200, (name, await r.text())
