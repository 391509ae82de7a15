"""Startup warmup: run, once, every request path this worker's role serves, then forget it.

Why: a fresh worker's first request pays one-time costs that no later request pays (first
forward of each batch shape class on the engine thread: packed decode rows, a prefill, an
append over a cached prefix, with their first-touch page faults and kernel setup; first chat
template render; first sampler and KV-transfer use). The router's online cost model fits its
first observations, so a cold first request skews its predictions. Like SGLang, the worker
warms itself up before /health answers 200; requests that arrive earlier wait for it.
Measured on SmolLM2 (``python -m tests.engine.cold_start_probe``): the one-time cost is
mostly the first forward (+10-13 ms CPU: ~1,600 first-touch page faults) and the first
template render (~4 ms); HTTP, tokenizer, sampler and socket firsts are under 1 ms each.

Paths per role (all in-process, no peer needed):
* every role: chat template render + encode, a greedy request (prefill, decode steps,
  incremental detokenisation), then a seeded top-p request that appends over the first
  one's cached prefix;
* prefill: both requests ship their KV over real TCP to this worker's own bootstrap server,
  fetched by the decode-side client code (``fetch_kv``) with a discarding store;
* decode: the first request receives its KV (``DECODE_RECV``) from a throwaway bootstrap
  server in this process; the append is a local prefill (with conditional agg; otherwise
  the fake-bootstrap local path).

Contract on exit: the radix cache is flushed, the metrics object is replaced by a fresh one
(no warmup request, token, step or transfer is counted) and ``last_step_ms`` is 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Protocol

from .config import EngineConfig
from .kv_transfer import BootstrapServer, PrefillResult, ReceivedKV, fetch_kv
from .request import Bootstrap, GenerateInput, Result
from .sampling import SamplingParams


class Worker(Protocol):
    """What the warmup uses of ``worker.Worker`` (a protocol: this module must not import
    worker, which starts the warmup)."""

    config: EngineConfig
    tokenizer: Any
    bootstrap: BootstrapServer | None
    runner: Any
    engine: Any
    scheduler: Any

    @property
    def context_limit(self) -> int: ...

    async def complete(self, inp: GenerateInput, mode: Any = None, warmup: bool = False) -> Result: ...

    def reset_metrics(self) -> None: ...


log = logging.getLogger(__name__)

_MESSAGES = [{"role": "user", "content": "Warm-up request: name three colours of the sea."}]
_FOLLOW_UP = [{"role": "user", "content": "And one more, please."}]
_NEW_TOKENS = 4
_GREEDY = SamplingParams(max_new_tokens=_NEW_TOKENS, temperature=0.0, ignore_eos=True)
_SEEDED = SamplingParams(max_new_tokens=_NEW_TOKENS, temperature=0.7, top_p=0.9, top_k=40, seed=7, ignore_eos=True)


async def warm_up(worker: Worker) -> None:
    tokenizer = worker.tokenizer
    # Both turns plus outputs stay within half the context (small KV pools in tests).
    limit = max(2, worker.context_limit // 2 - 2 * _NEW_TOKENS)
    first_ids = tokenizer.encode(tokenizer.apply_chat_template(_MESSAGES, add_generation_prompt=True))
    answer = tokenizer.decode(await _run(worker, first_ids[: limit // 2], _GREEDY, first_turn=True))
    # Turn 2 the way real clients send it: the whole conversation re-rendered; the radix cache
    # holds turn 1, so this is an append over a cached prefix.
    conversation = _MESSAGES + [{"role": "assistant", "content": answer}] + _FOLLOW_UP
    second_ids = tokenizer.encode(tokenizer.apply_chat_template(conversation, add_generation_prompt=True))
    await _run(worker, second_ids[:limit], _SEEDED, first_turn=False)
    await _forget(worker)


async def _run(worker: Worker, ids: list[int], sampling: SamplingParams, first_turn: bool) -> list[int]:
    """One warmup request through this role's real path; returns its output ids."""
    cfg = worker.config
    if cfg.is_prefill:
        return await _prefill_and_self_fetch(worker, ids, sampling)
    if cfg.is_decode and first_turn:
        return await _receive_from_local_bootstrap(worker, ids, sampling)
    if cfg.is_decode and not cfg.disaggregation_decode_enable_conditional_agg:
        inp = GenerateInput(ids, sampling, bootstrap=Bootstrap("2.2.2.2", 0, 0))
    else:
        inp = GenerateInput(ids, sampling, do_local_prefill=cfg.is_decode)
    return (await worker.complete(inp, warmup=True)).output_ids


async def _prefill_and_self_fetch(worker: Worker, ids: list[int], sampling: SamplingParams) -> list[int]:
    assert worker.bootstrap is not None
    room = random.randrange(2**63)
    inp = GenerateInput(ids, sampling, bootstrap=Bootstrap("127.0.0.1", worker.bootstrap.port, room))

    async def discard(_: ReceivedKV) -> None:
        return None

    fetch = asyncio.ensure_future(
        fetch_kv("127.0.0.1", worker.bootstrap.port, room, 0, worker.config.kv_transfer_timeout, discard)
    )
    try:
        result = await worker.complete(inp, warmup=True)
        received = await fetch
    finally:
        fetch.cancel()
    return [received.first_token, *result.output_ids[1:]]


async def _receive_from_local_bootstrap(worker: Worker, ids: list[int], sampling: SamplingParams) -> list[int]:
    """Decode: receive a prompt's KV from a throwaway bootstrap server in this process. The
    KV it serves is whatever the pool holds (outputs are discarded; the cache is flushed)."""
    import torch

    server = BootstrapServer("127.0.0.1", 0, worker.config.kv_transfer_timeout)
    await server.start()
    room = random.randrange(2**63)
    kv = worker.runner.kv
    served = PrefillResult(
        first_token=ids[-1],
        num_tokens=len(ids),
        prefill_cached_tokens=0,
        read_kv=lambda start, end: kv.read(torch.arange(start, end)),
    )
    send = asyncio.ensure_future(server.send(room, served))
    try:
        inp = GenerateInput(ids, sampling, bootstrap=Bootstrap("127.0.0.1", server.port, room))
        result = await worker.complete(inp, warmup=True)
        await send
        return result.output_ids
    finally:
        send.cancel()
        await server.close()


async def _forget(worker: Worker) -> None:
    def flush() -> bool:
        worker.engine.last_step_time = 0.0
        return worker.scheduler.flush_cache()

    if not await worker.engine.call(flush):
        log.warning("warmup: the prefix cache could not be flushed (a request is still admitted)")
    worker.reset_metrics()
