"""Worker: one ppd-worker's runtime (model, scheduler, engine thread, KV transfer, metrics)
and the request flow shared by every HTTP endpoint: ``Worker.generate``.

Request roles (decided by ``plan_mode``):
* null worker: everything is a local request (bootstrap fields are ignored);
* prefill worker: compute the prompt KV, sample the first token, ship both to the decode
  worker that comes for the request's bootstrap_room, then answer with that one token;
* decode worker: with bootstrap fields, receive the KV (only the part its radix cache lacks)
  and decode; with ``do_local_prefill`` (needs --disaggregation-decode-enable-conditional-agg),
  prefill locally over the cached prefix; bootstrap_host 2.2.2.2 (warmup) is local too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from . import warmup
from .config import EngineConfig
from .errors import InvalidRequest
from .kv_transfer import BootstrapServer, PrefillResult, ReceivedKV, TransferError, fetch_kv
from .request import GenerateInput, Mode, Req, Result
from .sampling import SamplingParams
from .stopping import OutputTracker

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        config: EngineConfig,
        lm: Any,
        scheduler: Any,
        runner: Any,
        engine: Any,
        metrics: Any,
        model_path: str,
        dtype: str,
    ) -> None:
        self.config = config
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.scheduler = scheduler
        self.runner = runner
        self.engine = engine
        self.metrics = metrics
        self.model_path = model_path
        self.dtype = dtype
        self.served_model_name = config.served_model_name or lm.name
        self.bootstrap: BootstrapServer | None = None
        self.started_at = time.time()
        self._live: dict[str, list[Req]] = {}  # client rid -> its unfinished requests
        # Set once the startup warmup is over (or skipped): /health is 503 before, and
        # requests wait for it, so none of them shares a step, the cache or metrics with it.
        self.ready = asyncio.Event()
        self._warmup: asyncio.Task | None = None
        self.warmup_ms: float | None = None

    @property
    def context_limit(self) -> int:
        return min(self.scheduler.max_total_tokens, self.lm.config.max_position_embeddings)

    def lm_weight_gb(self) -> float:
        """Bytes of the model's weight tensors (plain tensor attributes or nn parameters)."""
        import dataclasses

        import torch

        model = self.lm.model
        tensors = list(model.parameters()) + [v for v in vars(model).values() if isinstance(v, torch.Tensor)]
        for layer in getattr(model, "layers", []):
            if dataclasses.is_dataclass(layer):
                tensors += [getattr(layer, f.name) for f in dataclasses.fields(layer)]
        unique = {id(t): t for t in tensors if isinstance(t, torch.Tensor)}
        return sum(t.numel() * t.element_size() for t in unique.values()) / 1e9

    async def start(self) -> None:
        self.engine.start()
        if self.config.is_prefill:
            self.bootstrap = BootstrapServer(
                self.config.host,
                self.config.disaggregation_bootstrap_port,
                self.config.kv_transfer_timeout,
                self.config.kv_link_gbps,
                on_sent=self.metrics.on_kv_transfer,
                same_host=self.config.kv_transfer_same_host,
            )
            await self.bootstrap.start()
        if self.config.warmup:
            self._warmup = asyncio.create_task(self._warm_up())
        else:
            self.ready.set()

    async def _warm_up(self) -> None:
        began = time.monotonic()
        try:
            await warmup.warm_up(self)
        except Exception as exc:  # a broken engine also shows in /health; serve and say why
            log.warning("warmup failed: %s: %s", type(exc).__name__, exc)
        else:
            self.warmup_ms = (time.monotonic() - began) * 1000
        finally:
            self.ready.set()

    def reset_metrics(self) -> None:
        """Start metrics afresh (after the warmup): engine, bootstrap and endpoints all switch
        to the new object."""
        self.metrics = self.metrics.fresh()
        self.engine.observer = self.metrics
        if self.bootstrap is not None:
            self.bootstrap.on_sent = self.metrics.on_kv_transfer

    async def close(self) -> None:
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        if self.bootstrap is not None:
            await self.bootstrap.close()
        await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)

    # ---- request admission ------------------------------------------------------------
    def plan_mode(self, inp: GenerateInput) -> Mode:
        cfg = self.config
        if cfg.disaggregation_mode == "null":
            return Mode.LOCAL
        if cfg.is_prefill:
            return Mode.PREFILL_SEND
        if inp.do_local_prefill:
            if not cfg.disaggregation_decode_enable_conditional_agg:
                raise InvalidRequest(
                    "do_local_prefill needs a decode worker started with "
                    "--disaggregation-decode-enable-conditional-agg",
                    param="do_local_prefill",
                )
            return Mode.LOCAL
        if inp.bootstrap is None:
            raise InvalidRequest(
                "a decode worker needs bootstrap_host/bootstrap_port/bootstrap_room (or do_local_prefill)",
                param="bootstrap_room",
            )
        return Mode.LOCAL if inp.bootstrap.fake else Mode.DECODE_RECV

    def check_capacity(self, inp: GenerateInput) -> SamplingParams:
        """400 for a prompt over capacity; clamps max_new_tokens to what fits."""
        n, limit = len(inp.prompt_ids), self.context_limit
        if n == 0:
            raise InvalidRequest("the prompt is empty", param="input_ids")
        if n >= limit:
            raise InvalidRequest(
                f"the prompt has {n} tokens; this worker holds at most {limit - 1} prompt tokens",
                param="input_ids",
                code="context_length_exceeded",
            )
        bad = [t for t in inp.prompt_ids if not 0 <= t < self.lm.config.vocab_size]
        if bad:
            raise InvalidRequest(
                f"token id {bad[0]} is outside the vocabulary (0..{self.lm.config.vocab_size - 1})", param="input_ids"
            )
        sampling = inp.sampling
        if sampling.max_new_tokens > limit - n:
            sampling = _replace(sampling, max_new_tokens=limit - n)
        return sampling

    # ---- the request flow -------------------------------------------------------------
    async def generate(
        self, inp: GenerateInput, mode: Mode | None = None, warmup: bool = False
    ) -> AsyncGenerator[Result, None]:
        """Run one request; yields cumulative Results, the last one finished. Raises
        InvalidRequest before anything is queued. Leaving early aborts the request.
        Waits for the startup warmup first (``warmup=True``: a warmup request itself)."""
        from .engine import RequestHandle

        if not warmup:
            await self.ready.wait()
        if self.engine.error is not None:
            raise InvalidRequest(f"the engine failed: {self.engine.error}", status=503)
        mode = mode or self.plan_mode(inp)
        sampling = self.check_capacity(inp)
        if mode is Mode.PREFILL_SEND:
            sampling = _replace(sampling, max_new_tokens=1)
        tracker = OutputTracker(sampling, self.tokenizer.eos_token_ids, self._decode)
        req = Req(
            rid=uuid.uuid4().hex,
            prompt_ids=list(inp.prompt_ids),
            sampling=sampling,
            tracker=tracker,
            mode=mode,
            bootstrap=inp.bootstrap,
            cache_salt=inp.cache_salt,
        )
        req.client_rid = inp.rid or req.rid
        handle = RequestHandle(req, asyncio.get_running_loop())
        transfer: asyncio.Task | None = None
        finished = False
        self._live.setdefault(req.client_rid, []).append(req)
        self.engine.submit(handle)
        try:
            while True:
                update = await handle.updates.get()
                if update.kind == "need_kv":
                    transfer = asyncio.create_task(self._receive_kv(req))
                elif update.kind == "prefilled":
                    await self._send_kv(req, update.output_ids[0])
                else:
                    finished = update.finish_reason is not None
                    yield Result(req, update.output_ids, update.text, update.finish_reason)
                    if finished:
                        return
        finally:
            same_rid = self._live.get(req.client_rid, [])
            if req in same_rid:
                same_rid.remove(req)
            if not same_rid:
                self._live.pop(req.client_rid, None)
            if not finished:
                self.engine.abort(req)
                if self.bootstrap is not None and req.bootstrap is not None:
                    self.bootstrap.cancel(req.bootstrap.room, "request aborted")
            if transfer is not None and not transfer.done():
                transfer.cancel()

    def abort(self, rid: str | None = None) -> int:
        """SGLang's /abort_request: abort the requests with client id ``rid`` (all if None).
        Their responses end with finish_reason {"type": "abort"}. Returns how many."""
        targets = [r for reqs in self._live.values() for r in reqs] if rid is None else self._live.get(rid, [])
        for req in list(targets):
            self.engine.abort(req, "aborted by /abort_request")
        return len(targets)

    async def _receive_kv(self, req: Req) -> None:
        assert req.bootstrap is not None
        port = req.bootstrap.port or self.config.disaggregation_bootstrap_port
        began = time.monotonic()
        loop = asyncio.get_running_loop()

        async def store(received: ReceivedKV) -> None:
            if received.num_tokens != req.prompt_len:  # the two sides got different prompts
                raise ValueError(
                    f"the prefill worker's prompt has {received.num_tokens} tokens, "
                    f"this request's prompt has {req.prompt_len}"
                )
            await loop.run_in_executor(None, self.runner.write_kv, req, received.start, received.data)

        try:
            received = await fetch_kv(
                req.bootstrap.host,
                port,
                req.bootstrap.room,
                req.num_prefix_tokens,
                self.config.kv_transfer_timeout,
                store,
                same_host=self.config.kv_transfer_same_host,
            )
        except Exception as exc:  # any failure (also a malformed peer frame) must end the request
            message = str(exc) if isinstance(exc, TransferError) else f"KV transfer failed: {type(exc).__name__}: {exc}"
            req.error, req.error_status = message, 503
            self.metrics.on_transfer_failed()
            self.engine.abort(req, message)
            return
        req.prefill_cached_tokens = received.prefill_cached_tokens
        req.kv_transfer_bytes = received.nbytes
        self.metrics.on_kv_transfer(received.nbytes, time.monotonic() - began)
        self.engine.kv_received(req, received.first_token)

    async def _send_kv(self, req: Req, first_token: int) -> None:
        """Prefill side: hand the KV to the decode worker of the room, then free the request."""
        bootstrap = req.bootstrap
        try:
            if bootstrap is not None and not bootstrap.fake and self.bootstrap is not None:
                result = PrefillResult(
                    first_token,
                    req.prompt_len,
                    req.num_prefix_tokens,
                    lambda start, end: self.runner.read_kv(req, start, end),
                )
                req.kv_transfer_bytes = await self.bootstrap.send(bootstrap.room, result)
            req.tracker.finish_now({"type": "length", "length": 0})
        except TransferError as exc:
            req.error, req.error_status = str(exc), 503
            self.metrics.on_transfer_failed()
            req.tracker.finish_now({"type": "abort", "message": str(exc)})
        finally:
            self.engine.release_sent(req)

    async def complete(self, inp: GenerateInput, mode: Mode | None = None, warmup: bool = False) -> Result:
        last = None
        async for result in self.generate(inp, mode, warmup):
            last = result
        assert last is not None
        return last

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _replace(sampling: SamplingParams, **changes: Any) -> SamplingParams:
    import dataclasses

    return dataclasses.replace(sampling, **changes)


def build_worker(config: EngineConfig, log_fn=print) -> Worker:
    """Load the model and wire a Worker (blocking: model load takes seconds)."""
    import torch

    from ppd_kernels import load_model

    from .engine import Engine
    from .metrics import EngineMetrics
    from .model_source import resolve_dtype, resolve_model
    from .runner import ModelRunner
    from .scheduler import Scheduler

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {config.device}: this torch build or machine has no CUDA")
        torch.cuda.set_device(torch.device(config.device))
        if config.memory_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(config.memory_fraction, torch.device(config.device))
    source = resolve_model(config.model, log=log_fn)
    dtype_name = resolve_dtype(config.dtype, config.device)
    dtype = getattr(torch, dtype_name)
    lm = load_model(source, dtype=dtype, device=config.device)
    enable_radix = not config.is_decode or config.disaggregation_decode_enable_radix_cache
    scheduler = Scheduler(
        config.num_pages,
        config.page_size,
        config.chunked_prefill_size,
        config.max_running_requests,
        enable_radix_cache=enable_radix,
    )
    runner = ModelRunner(
        lm, config.num_pages * config.page_size, config.page_size, dtype, config.device, config.decode_rows_tokens
    )
    metrics = EngineMetrics(config.served_model_name or lm.name)
    engine = Engine(scheduler, runner, observer=metrics)
    return Worker(config, lm, scheduler, runner, engine, metrics, source, dtype_name)
