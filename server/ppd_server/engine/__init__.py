"""The embedded engine worker ``ppd-worker``: a small CPU/GPU inference server that speaks
SGLang's worker HTTP protocol in all three SGLang roles (null = unified, prefill, decode).

Map of the package (one concept per file):

* ``config``       EngineConfig (frozen, validated) — the single source of defaults.
* ``cli``          argparse built from the config, SGLang flag names; ``main()``.
* ``model_source`` resolves ``smollm2`` / a path / ``synthetic[:SEED]`` to a loadable source.
* ``pages``        page allocator over KV slots (prefers contiguous runs).
* ``radix_cache``  prefix cache over pages with ref-count locks and LRU eviction.
* ``request``      Req: one request's tokens, pages, state and sampling params.
* ``sampling``     sampling-param parsing/validation and the torch sampler.
* ``stopping``     stop ids / stop strings / max tokens, incremental detokenisation.
* ``scheduler``    continuous batching, chunked prefill, admission, P/D request states.
* ``runner``       turns a scheduled step into a ForwardBatch and calls the model.
* ``engine``       the thread that owns the scheduler and model; its bridge to asyncio.
* ``worker``       one worker's runtime and the request flow of every role (``Worker.generate``).
* ``kv_transfer``  bootstrap server (prefill) and client (decode): framed TCP KV transfer.
* ``http_api``     aiohttp routes: SGLang native API; ``openai_api``: OpenAI shapes.
* ``errors``       InvalidRequest and OpenAI-style error bodies.
* ``tool_calls``   Hermes-style ``<tool_call>`` parsing; ``metrics``: prometheus metrics.

Bookkeeping (pages, radix tree, scheduler) never imports torch: it is tested without a model.
"""
