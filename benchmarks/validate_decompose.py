"""Where a turn-2+ TTFT goes on the embedded 1P1D cluster, and the figures the simulator lacks.

The profile (``ppd-server profile``) times the engine through ``POST /generate`` with token ids:
one HTTP hop, no chat template, no tokenizer, no router. A benchmark turn is a chat request to the
router, which counts its tokens, decides and proxies it to the decode worker, which renders the
chat template, tokenizes the whole history and streams OpenAI chunks back through the router. This
module measures the difference on the idle cluster (after the load run, same processes), with the
same shape as the workload's turns 2+ (a ~1.5k-token history, a ~48-word append), three ways per
probe conversation, in rotating order, on fresh appends (the cache holds the same history for all):

* ``router``: the chat request through ppd-server (routed local on an idle cluster);
* ``worker_chat``: the same request straight to the decode worker (``do_local_prefill``);
* ``worker_generate``: the same prompt as token ids to ``/generate`` (what the profile times).

``router - worker_chat`` = the router hop (token count, decision, proxy, relay);
``worker_chat - worker_generate`` = chat template + tokenization on the worker and the chat
stream's shape; their sum is the per-request overhead the simulator adds
(``ppd-sim --request-overhead-ms``). The profile's own prediction for the probe's shape is printed
beside ``worker_generate`` (how well the fitted step-time model knows this shape).

:func:`turn_tokens` reads the engine's token accounting off the measured run: how many tokens each
turn 2+ really prefilled (prompt - cached) against the words the workload asked for (the chat
template adds its markers, and the page-granular prefix cache recomputes the partial last page).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

_WORDS_FIRST = 1500
_WORDS_APPEND = 48


def _stream_ttft(client: Any, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST a streamed request; TTFT = the first chunk that carries a token (choices or token ids)."""
    t0 = time.perf_counter()
    first = None
    last: dict[str, Any] = {}
    text: list[str] = []
    with client.stream("POST", url, json=body, headers=headers or {}) as resp:
        if resp.status_code != 200:
            resp.read()
            raise RuntimeError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if first is None and (chunk.get("choices") or chunk.get("output_ids") or chunk.get("text")):
                first = time.perf_counter()
            for c in chunk.get("choices") or []:
                text.append((c.get("delta") or {}).get("content") or "")
            last = chunk
    if first is None:
        raise RuntimeError(f"{url} streamed no token")
    return {"ttft_ms": (first - t0) * 1000.0, "last": last, "text": "".join(text)}


def probe_overheads(router_url: str, decode_url: str, rounds: int = 3, seed: int = 7) -> dict[str, Any]:
    """Idle-cluster probe (see the module docstring); medians over ``rounds`` conversations. A
    router turn the policy sent P->D is left out (its path is not the one compared)."""
    import httpx
    from ppd_bench.prompt import prompt_text

    from ppd_kernels.tokenizer import load_tokenizer
    from ppd_sdk.wire import HEADER_CONVERSATION_ID

    client = httpx.Client(timeout=120.0, trust_env=False)
    try:
        model = (client.get(router_url + "/v1/models").json().get("data") or [{"id": "default"}])[0]["id"]
        info = client.get(decode_url + "/server_info").json()
        tokenizer = load_tokenizer(info["tokenizer_path"])
        kinds = ("router", "worker_chat", "worker_generate")
        ttft: dict[str, list[float]] = {k: [] for k in kinds}
        shape: list[tuple[int, int]] = []  # (prompt, cached) of the router's turns
        route: list[str] = []
        template_ms: list[float] = []
        usages: list[dict[str, Any]] = []
        for r in range(rounds):
            cid = f"decompose-{seed}-{r}"
            head = {HEADER_CONVERSATION_ID: cid}
            messages: list[dict[str, Any]] = [
                {"role": "user", "content": prompt_text(_WORDS_FIRST, seed, f"probe{r}", 1)}
            ]
            body = {"model": model, "messages": messages, "stream": True, "max_tokens": 8, "temperature": 0.0}
            answer = _stream_ttft(client, router_url + "/v1/chat/completions", body, head)["text"]
            messages.append({"role": "assistant", "content": answer})
            order = kinds[r % 3 :] + kinds[: r % 3]
            for k, kind in enumerate(order):
                msgs = [*messages, {"role": "user", "content": prompt_text(_WORDS_APPEND, seed, f"probe{r}", 2 + k)}]
                t0 = time.perf_counter()
                ids = tokenizer.encode(tokenizer.apply_chat_template(msgs, add_generation_prompt=True))
                template_ms.append((time.perf_counter() - t0) * 1000.0)
                chat = {"model": model, "messages": msgs, "stream": True, "max_tokens": 2, "temperature": 0.0}
                if kind == "router":
                    # the router decides from loads it polls every 0.5 s: let it see the idle cluster
                    # (a direct request just before must not look like a busy decode worker)
                    time.sleep(1.2)
                    got = _stream_ttft(
                        client,
                        router_url + "/v1/chat/completions",
                        {**chat, "stream_options": {"include_usage": True}},
                        head,
                    )
                    usage = got["last"].get("usage") or {}
                    ppd = got["last"].get("ppd") or {}
                    details = usage.get("prompt_tokens_details") or {}
                    route.append(str(ppd.get("route")))
                    if route[-1] != "local":  # another path (P->D): not the shape compared here
                        continue
                    shape.append((usage.get("prompt_tokens") or len(ids), details.get("cached_tokens") or 0))
                    usages.append({"usage": usage, "ppd_cached": ppd.get("cached_tokens"), "ids": len(ids)})
                elif kind == "worker_chat":
                    got = _stream_ttft(client, decode_url + "/v1/chat/completions", {**chat, "do_local_prefill": True})
                else:
                    gen = {
                        "input_ids": ids,
                        "sampling_params": {"max_new_tokens": 2, "temperature": 0.0},
                        "stream": True,
                        "do_local_prefill": True,
                    }
                    got = _stream_ttft(client, decode_url + "/generate", gen)
                ttft[kind].append(got["ttft_ms"])
    finally:
        client.close()
    if not ttft["router"]:
        return {"rounds": rounds, "router_routes": route, "error": "the router never routed the probe turn local"}
    med = {k: statistics.median(v) for k, v in ttft.items()}
    prompt = statistics.median(p for p, _ in shape) if shape else None
    cached = statistics.median(c for _, c in shape) if shape else None
    return {
        "rounds": rounds,
        "ttft_ms": med,
        "samples_ms": ttft,
        "router_routes": route,
        "router_usage": usages,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "template_tokenize_ms": statistics.median(template_ms) if template_ms else None,
        "router_hop_ms": med["router"] - med["worker_chat"],
        "worker_chat_ms": med["worker_chat"] - med["worker_generate"],
        "request_overhead_ms": max(0.0, med["router"] - med["worker_generate"]),
    }


def turn_tokens(measured: dict[str, Any]) -> dict[str, Any]:
    """Turns 2+ of the measured run, as the engine counted them: tokens prefilled (prompt - cached)
    vs words asked for, and the template's share (prompt growth beyond the last answer)."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in measured.get("records", []):
        by.setdefault(r["session"], {})[r["turn"]] = r
    new, asked, template = [], [], []
    for turns in by.values():
        for k, r in turns.items():
            prev = turns.get(k - 1)
            if k < 2 or not r.get("ok") or not prev or not prev.get("ok") or r.get("prompt_tokens") is None:
                continue
            new.append(r["prompt_tokens"] - (r.get("cached_tokens") or 0))
            asked.append(r["requested_input_tokens"])
            template.append(r["prompt_tokens"] - prev["prompt_tokens"] - (prev.get("completion_tokens") or 0))
    if not new:
        return {}
    return {
        "turns": len(new),
        "new_tokens_p50": statistics.median(new),
        "asked_tokens_p50": statistics.median(asked),
        "append_with_template_p50": statistics.median(template),
    }


def engine_trace(measured: dict[str, Any], workload_lines: list[str]) -> list[str]:
    """The sessions as run, in the engine's tokens: each turn's new input = its prompt minus the
    previous prompt and answer (the chat template's markers included), its output = the tokens
    generated. Turns without usage (failed) keep the workload's counts."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in measured.get("records", []):
        by.setdefault(r["session"], {})[r["turn"]] = r
    out = []
    for line in workload_lines:
        if not line.strip():
            continue
        conv = json.loads(line)
        recs = by.get(conv["id"], {})
        prev_total = 0
        for k, turn in enumerate(conv["turns"], start=1):
            r = recs.get(k)
            if r and r.get("ok") and r.get("prompt_tokens") and r.get("completion_tokens"):
                turn["input_tokens"] = max(1, r["prompt_tokens"] - prev_total)
                turn["output_tokens"] = r["completion_tokens"]
                prev_total = r["prompt_tokens"] + r["completion_tokens"]
            else:
                prev_total += turn["input_tokens"] + turn["output_tokens"]
        out.append(json.dumps(conv, separators=(",", ":")))
    return out
