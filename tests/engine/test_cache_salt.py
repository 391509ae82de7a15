"""``cache_salt`` (SGLang's and vLLM's request field): a prefix cached under one salt is never
reused under another, on the radix tree itself, through a unified worker's API and across a
P->D pair (the decode side asks only for what its own salted cache lacks). Each isolation check
is paired with the same-salt hit, so the tests fail if caching were simply off."""

from __future__ import annotations

import pytest

from ppd_engine.radix_cache import RadixCache

from .test_pd_pair import GREEDY, pd_body, via_pd

P = 4


def test_namespaces_never_share_a_prefix():
    cache = RadixCache(P)
    cache.insert(list(range(8)), [1, 2], namespace="tenant-a")
    assert cache.match(list(range(8)), namespace="tenant-a")[0] == [1, 2]
    assert cache.match(list(range(8)), namespace="tenant-b")[0] == []
    assert cache.match(list(range(8)))[0] == []  # the unsalted namespace neither
    canonical, redundant, _ = cache.insert(list(range(8)), [5, 6], namespace="tenant-b")
    assert canonical == [5, 6] and redundant == []  # its own pages, no dedupe across salts
    assert cache.num_pages == 4 and cache.num_namespaces == 2


def test_locks_evictions_and_reset_cover_every_namespace():
    cache = RadixCache(P)
    _, _, node = cache.insert([1] * 8, [1, 2], namespace="a")
    cache.insert([1] * 8, [3, 4], namespace="b")
    cache.lock(node)
    assert cache.num_evictable_pages == 2
    assert sorted(cache.evict(10)) == [3, 4]  # b's pages; a's are locked
    assert cache.num_namespaces == 1  # b's emptied root is dropped
    with pytest.raises(RuntimeError):
        cache.reset()
    cache.unlock(node)
    assert sorted(cache.reset()) == [1, 2] and cache.num_pages == 0 and cache.num_namespaces == 0


async def _generate(client, text: str, **extra) -> dict:
    r = await client.post("/generate", json={"text": text, "sampling_params": GREEDY, **extra})
    assert r.status == 200, await r.text()
    return (await r.json())["meta_info"]


async def test_a_salted_prefix_is_reused_only_under_its_salt(unified):
    client, _ = unified
    prompt = "a salted prompt long enough to fill several pages of the cache " * 2
    await _generate(client, prompt, cache_salt="alice")
    assert (await _generate(client, prompt + "?", cache_salt="alice"))["cached_tokens"] > 8
    assert (await _generate(client, prompt + "?", cache_salt="bob"))["cached_tokens"] == 0
    assert (await _generate(client, prompt + "?"))["cached_tokens"] == 0


async def test_openai_route_honours_the_salt(unified):
    client, _ = unified
    messages = [{"role": "user", "content": "an OpenAI-shaped salted question " * 4}]

    async def cached(salt: str) -> int:
        body = {"model": "default", "messages": messages, "max_tokens": 2, "cache_salt": salt}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status == 200, await r.text()
        return (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"]

    await cached("carol")
    assert await cached("carol") > 8
    assert await cached("dave") == 0


@pytest.mark.parametrize("salt", [7, ["a"], {"a": 1}, "x" * 1025])
async def test_a_bad_salt_is_a_400_naming_it(unified, salt):
    client, _ = unified
    r = await client.post("/generate", json={"text": "hi", "sampling_params": GREEDY, "cache_salt": salt})
    assert r.status == 400
    assert (await r.json())["error"]["param"] == "cache_salt"


async def test_pd_turn_two_transfers_what_the_salted_decode_cache_lacks(prefill, decode):
    first = "Turn one of a salted conversation, long enough to fill several pages. "
    _, d1 = await via_pd(prefill, decode, first, body=pd_body(prefill[1], first, cache_salt="erin"))
    second = first + d1["text"] + " And a follow-up?"
    _, same = await via_pd(prefill, decode, second, body=pd_body(prefill[1], second, cache_salt="erin"))
    assert same["meta_info"]["cached_tokens_details"]["device"] > d1["meta_info"]["prompt_tokens"] - 8
    _, other = await via_pd(prefill, decode, second, body=pd_body(prefill[1], second, cache_salt="frank"))
    meta = other["meta_info"]
    assert meta["cached_tokens_details"]["device"] == 0 and meta["cached_tokens"] == 0
    assert meta["kv_transfer_bytes"] == meta["prompt_tokens"] * decode[1].runner.kv_bytes_per_token
    assert other["output_ids"] == same["output_ids"]  # the same answer, computed afresh
