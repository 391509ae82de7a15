"""Per-tenant prefix caches, end to end: ``ppd-server --embedded 1P1D`` (real SmolLM2 in real
prefill and decode ppd-workers) with two API keys and the real openai client. Tenant A's second
conversation with A's own prompt is served from the cache; tenant B sending the very same prompt
is not (the router salts each tenant's requests, the workers' radix caches honour the salt)."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "sk-e2e-tenant-a-71c3", "sk-e2e-tenant-b-0f9d"
PROMPT = "Here is a long shared briefing that only tenant A has seen so far. " * 12


def _cached(base_url: str, key: str, conversation: str) -> int:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=120)
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=2,
        extra_headers={"X-PPD-Conversation-Id": conversation},
    )
    assert r.usage is not None and r.usage.prompt_tokens > 100
    return r.usage.prompt_tokens_details.cached_tokens


def test_one_tenant_never_hits_another_tenants_cached_prompt(ppd_router_factory):
    url = ppd_router_factory(args=("--api-key", KEY_A, "--api-key", KEY_B))
    assert _cached(url, KEY_A, "a-1") == 0
    assert _cached(url, KEY_A, "a-2") > 100, "A's own prompt again: cached (so caching is on)"
    assert _cached(url, KEY_B, "b-1") == 0, "B, the same prompt: nothing of A's is reused"
    assert _cached(url, KEY_B, "b-2") > 100, "B's own second time: cached under B's salt"
