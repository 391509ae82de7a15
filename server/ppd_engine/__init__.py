"""The embedded engine worker ``ppd-worker``: a small CPU/GPU inference server that speaks
SGLang's worker HTTP protocol in all three SGLang roles (null = unified, prefill, decode).

Map of the package (one concept per file):

* ``config``       EngineConfig (frozen, validated) — the single source of defaults.
* ``cli``          argparse built from the config, SGLang flag names; ``main()``.
* ``model_source`` resolves ``smollm2`` / a path / ``synthetic[:SEED]`` to a loadable source.
* ``pages``        page allocator over KV slots (prefers contiguous runs).
* ``radix_cache``  prefix cache over pages with ref-count locks and LRU eviction; one tree per
                   ``cache_salt`` (SGLang's field: prefixes are shared only within a salt).
* ``request``      Req: one request's tokens, pages, state and sampling params.
* ``sampling``     sampling-param parsing/validation and the torch sampler.
* ``stopping``     stop ids / stop strings / max tokens, incremental detokenisation.
* ``scheduler``    continuous batching, chunked prefill, admission, P/D request states.
* ``runner``       turns a scheduled step into a ForwardBatch and calls the model.
* ``engine``       the thread that owns the scheduler and model; its bridge to asyncio.
* ``worker``       one worker's runtime and the request flow of every role (``Worker.generate``).
* ``warmup``       startup self-warmup of the role's paths; /health is 503 until it is done.
* ``kv_transfer``  bootstrap server (prefill) and client (decode): framed TCP KV transfer.
* ``http_api``     aiohttp routes: SGLang native API; ``openai_api``: OpenAI shapes.
* ``errors``       InvalidRequest and OpenAI-style error bodies.
* ``tool_calls``   Hermes-style ``<tool_call>`` parsing; ``metrics``: prometheus metrics.

Bookkeeping (pages, radix tree, scheduler) never imports torch: it is tested without a model.

Extras beyond SGLang's wire format (all additive):

* ``meta_info.kv_transfer_bytes``: KV bytes this request moved (sent on a prefill worker,
  received on a decode worker); ``meta_info.cached_tokens_details = {"device": local radix
  hit, "prefill": the prefill worker's own hit}``; ``cached_tokens`` = their sum, capped at
  the prompt. OpenAI answers carry the same ``meta_info`` (non-streamed: top level; streamed:
  in the final usage chunk when ``stream_options.include_usage``).
* ``/v1/loads`` rank fields ``running_context_tokens`` (sum of the decoding streams' contexts),
  ``num_decoding_reqs``, ``num_prefilling_reqs``, ``last_step_ms``, and
  ``disaggregation.kv_transfer_total_bytes``.
* ``/server_info`` has ``kv_bytes_per_token``, ``dtype``, ``max_total_num_tokens`` and every
  EngineConfig field.
* Seeded sampling draws token ``i`` with seed ``f(sampling_seed, i)``, so P->D and unified
  give the same seeded output.
"""
