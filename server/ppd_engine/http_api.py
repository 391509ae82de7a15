"""aiohttp app of a ppd-worker: SGLang 0.5.x native endpoints (the OpenAI ones are added by
``openai_api``). Errors are OpenAI-style JSON bodies; bad input is a 4xx, never a 500.
Unknown top-level request keys are ignored (forward compatible, like SGLang)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .errors import InvalidRequest, error_body
from .http_common import WORKER, is_int, meta_info, parse_common, raise_if_failed, read_json, stream_sse
from .openai_api import add_openai_routes
from .request import GenerateInput, Mode
from .sampling import SamplingParams
from .worker import Worker

log = logging.getLogger(__name__)
VERSION = "ppd-0.1.0"


def create_app(worker: Worker) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[_errors])
    app[WORKER] = worker
    app.router.add_post("/generate", generate)
    for path in ("/health", "/health_generate"):
        app.router.add_get(path, health_generate if path == "/health_generate" else health)
    for path in ("/server_info", "/get_server_info"):
        app.router.add_get(path, server_info)
    for path in ("/model_info", "/get_model_info"):
        app.router.add_get(path, model_info)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/flush_cache", flush_cache)
    app.router.add_post("/abort_request", abort_request)
    app.router.add_get("/v1/loads", loads)
    app.router.add_get("/get_load", get_load)
    app.router.add_get("/metrics", metrics)
    add_openai_routes(app)

    async def on_startup(app: web.Application) -> None:
        await app[WORKER].start()

    async def on_cleanup(app: web.Application) -> None:
        await app[WORKER].close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return web.json_response(error_body(exc.message, exc.status, exc.param, exc.code), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(error_body(exc.reason, exc.status), status=exc.status)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug: log it, answer JSON without a traceback
        log.exception("internal error on %s", request.path)
        return web.json_response(error_body(f"internal error: {type(exc).__name__}", 500), status=500)


def parse_generate(body: dict[str, Any], worker: Worker) -> GenerateInput:
    text, input_ids = body.get("text"), body.get("input_ids")
    if (text is None) == (input_ids is None):
        raise InvalidRequest("give exactly one of text or input_ids", param="text")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string (batches are not supported)", param="text")
        prompt_ids = worker.tokenizer.encode(text)
    else:
        if not isinstance(input_ids, list) or not all(is_int(t) for t in input_ids):
            raise InvalidRequest("input_ids must be a list of integers (batches are not supported)", param="input_ids")
        prompt_ids = input_ids
    if body.get("return_logprob"):
        raise InvalidRequest("return_logprob is not supported by this engine", param="return_logprob")
    sampling = SamplingParams.from_dict(body.get("sampling_params"))
    return parse_common(body, prompt_ids, sampling)


async def generate(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    body = await read_json(request)
    inp = parse_generate(body, worker)
    results = worker.generate(inp)
    if body.get("stream"):
        return await stream_sse(
            request, results, lambda r: {"text": r.text, "output_ids": r.output_ids, "meta_info": meta_info(r)}
        )
    last = None
    async for result in results:
        last = result
    assert last is not None
    raise_if_failed(last)
    return web.json_response({"text": last.text, "output_ids": last.output_ids, "meta_info": meta_info(last)})


def _unhealthy(worker: Worker) -> web.Response | None:
    if not worker.engine.alive:
        return web.json_response(error_body("engine is not running", 503), status=503)
    if not worker.ready.is_set():
        return web.json_response(error_body("warming up", 503), status=503)
    return None


async def health(request: web.Request) -> web.Response:
    return _unhealthy(request.app[WORKER]) or web.Response(text="")


async def health_generate(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    unhealthy = _unhealthy(worker)
    if unhealthy is not None:
        return unhealthy
    inp = GenerateInput([worker.tokenizer.bos_token_id or 0], SamplingParams(max_new_tokens=1, temperature=0.0))
    mode = Mode.PREFILL_SEND if worker.config.is_prefill else Mode.LOCAL
    await worker.complete(inp, mode=mode)
    return web.Response(text="")


def server_info_dict(worker: Worker) -> dict[str, Any]:
    cfg = worker.config
    info = cfg.as_dict()
    info.update(
        {
            "model_path": worker.model_path,
            "tokenizer_path": worker.model_path,
            "served_model_name": worker.served_model_name,
            "dtype": worker.dtype,
            "kv_bytes_per_token": worker.runner.kv_bytes_per_token,
            "max_total_num_tokens": worker.scheduler.max_total_tokens,
            "context_length": worker.context_limit,
            "disaggregation_transfer_backend": "ppd-tcp",
            "dp_size": 1,
            "tp_size": 1,
            "version": VERSION,
            "internal_states": [{"last_gen_throughput": worker.metrics.gen_throughput()}],
        }
    )
    return info


async def server_info(request: web.Request) -> web.Response:
    return web.json_response(server_info_dict(request.app[WORKER]))


async def model_info(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    return web.json_response(
        {
            "model_path": worker.model_path,
            "tokenizer_path": worker.model_path,
            "is_generation": True,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "served_model_name": worker.served_model_name,
            "weight_version": "default",
        }
    )


async def models(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    return web.json_response(
        {
            "object": "list",
            "data": [
                {
                    "id": worker.served_model_name,
                    "object": "model",
                    "created": int(worker.started_at),
                    "owned_by": "sglang",
                    "root": worker.model_path,
                    "max_model_len": worker.context_limit,
                }
            ],
        }
    )


async def flush_cache(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    try:
        ok = await worker.engine.call(worker.scheduler.flush_cache)
    except RuntimeError:
        if worker.engine.error is None:
            raise
        return web.json_response(error_body("engine is not running", 503), status=503)
    if not ok:
        return web.Response(status=400, text="Cache not flushed: requests are running.\n")
    return web.Response(text="Cache flushed.\n")


async def abort_request(request: web.Request) -> web.Response:
    body = await read_json(request)
    rid, abort_all = body.get("rid"), body.get("abort_all", False)
    if not abort_all and not isinstance(rid, str):
        raise InvalidRequest("give rid (a string) or abort_all: true", param="rid")
    aborted = request.app[WORKER].abort(None if abort_all else rid)
    return web.json_response({"aborted": aborted})


def load_snapshot(worker: Worker) -> dict[str, Any]:
    from .request import State

    sched = worker.scheduler
    active = list(sched.active)
    waiting = list(sched.waiting)
    used, capacity = sched.num_used_tokens, sched.max_total_tokens
    count = lambda state: sum(1 for r in active if r.state is state)  # noqa: E731
    return {
        "dp_rank": 0,
        "num_running_reqs": len(active),
        "num_waiting_reqs": len(waiting),
        "num_waiting_uncached_tokens": sum(r.prompt_len for r in waiting),
        "num_used_tokens": used,
        "max_total_num_tokens": capacity,
        "token_usage": used / capacity,
        "gen_throughput": worker.metrics.gen_throughput(),
        "cache_hit_rate": worker.metrics.cache_hit_rate,
        "utilization": min(1.0, len(active) / sched.max_running_requests),
        "num_decoding_reqs": count(State.DECODING),
        "num_prefilling_reqs": count(State.PREFILLING),
        "running_context_tokens": sum(r.num_computed for r in active if r.state is State.DECODING),
        "last_step_ms": worker.engine.last_step_time * 1000,
        "disaggregation": {
            "mode": worker.config.disaggregation_mode,
            "prefill_bootstrap_queue_reqs": 0,
            "prefill_inflight_queue_reqs": count(State.SENDING),
            "decode_prealloc_queue_reqs": 0,
            "decode_transfer_queue_reqs": count(State.AWAITING_KV),
            "kv_transfer_speed_gb_s": worker.metrics.kv_transfer_last_speed_gb_s,
            "kv_transfer_latency_ms": worker.metrics.kv_transfer_last_latency_ms,
            "kv_transfer_total_bytes": worker.metrics.kv_transfer_bytes_total,
        },
        "queues": {"waiting": len(waiting), "grammar": 0, "paused": 0, "retracted": 0, "prealloc_ready": 0},
        "memory": {
            "weight_gb": worker.lm_weight_gb(),
            "kv_cache_gb": capacity * worker.runner.kv_bytes_per_token / 1e9,
            "token_capacity": capacity,
        },
    }


_SECTIONS = {"disagg": "disaggregation", "queues": "queues", "memory": "memory"}


async def loads(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    snapshot = load_snapshot(worker)
    include = {p.strip() for p in request.query.get("include", "all").split(",") if p.strip()}
    if "all" not in include:
        for short, key in _SECTIONS.items():
            if short not in include and key not in include:
                snapshot.pop(key)
    return web.json_response(
        {
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "version": VERSION,
            "accelerator": worker.config.device,
            "loads": [snapshot],
        }
    )


async def get_load(request: web.Request) -> web.Response:
    sched = request.app[WORKER].scheduler
    return web.json_response(
        [
            {
                "dp_rank": 0,
                "num_reqs": sched.num_running + sched.num_waiting,
                "num_waiting_reqs": sched.num_waiting,
                "num_tokens": sched.num_used_tokens,
                "ts_tic": time.time(),
            }
        ]
    )


async def metrics(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    body = worker.metrics.render(worker.scheduler)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
