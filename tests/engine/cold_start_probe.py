"""Cold-start probe (not a test): request 1 vs 2 vs 3 latency of fresh real SmolLM2 workers.

    python -m tests.engine.cold_start_probe [--no-warmup]

Starts a unified worker, then a fresh prefill + decode pair (conditional agg on), and times
three requests of the same shape (different words, so no cached prefix) per path, in the order
a fresh cluster sees them: unified chat, unified /generate; P->D chat, P->D /generate,
D-local chat. Prints TTFT (first streamed chunk) and end-to-end ms per request: the median
over ``--rounds`` fresh starts (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from .launch import free_port, worker_process

TOPICS = ["oceans", "volcanoes", "glaciers", "deserts", "forests", "rivers", "islands", "canyons"]


def chat_body(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    # Own system prompt: the template's default one would be a shared cached prefix, making
    # request 2+ cheaper than request 1 for a reason that has nothing to do with a cold start.
    return {"messages": [{"role": "system", "content": f"{topic.capitalize()} are your only subject."},
                         {"role": "user", "content": f"Write two sentences about {topic} for a child."}],
            "max_tokens": 8, "temperature": 0, "stream": True}


def generate_body(i: int) -> dict:
    topic = TOPICS[(i + 3) % len(TOPICS)]
    return {"text": f"<|im_start|>user\nTell me one fact about {topic}.<|im_end|>\n<|im_start|>assistant\n",
            "sampling_params": {"temperature": 0, "max_new_tokens": 8}, "stream": True}


def timed_stream(client: httpx.Client, url: str, body: dict) -> tuple[float, float]:
    began = time.perf_counter()
    ttft = None
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if ttft is None and line.startswith("data: ") and line != "data: [DONE]":
                ttft = time.perf_counter() - began
    return (ttft or 0.0) * 1000, (time.perf_counter() - began) * 1000


def timed_pd(client: httpx.Client, prefill: str, bootstrap_port: int, decode: str, path: str,
             body: dict) -> tuple[float, float]:
    """Prefill and decode requests sent together, like a router does; times the decode stream."""
    body = {**body, "bootstrap_host": "127.0.0.1", "bootstrap_port": bootstrap_port,
            "bootstrap_room": random.randrange(2 ** 63)}
    with httpx.Client(timeout=60) as side:
        errors: list[BaseException] = []

        def run_prefill() -> None:
            try:
                side.post(prefill + path, json={**body, "stream": False}).raise_for_status()
            except BaseException as exc:  # reported after the decode side
                errors.append(exc)

        thread = threading.Thread(target=run_prefill)
        thread.start()
        try:
            return timed_stream(client, decode + path, body)
        finally:
            thread.join()
            if errors:
                raise errors[0]


def report(label: str, rounds: list[list[tuple[float, float]]]) -> None:
    cells = []
    for i in range(len(rounds[0])):
        ttft = statistics.median(r[i][0] for r in rounds)
        e2e = statistics.median(r[i][1] for r in rounds)
        cells.append(f"#{i + 1} ttft {ttft:6.1f} e2e {e2e:6.1f}")
    print(f"{label:20s} {'  '.join(cells)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warmup", action="store_true", help="start the workers with --no-warmup")
    parser.add_argument("--repeats", type=int, default=3, help="requests per path")
    parser.add_argument("--rounds", type=int, default=1, help="fresh starts; medians are printed")
    args = parser.parse_args()
    extra = ["--no-warmup"] if args.no_warmup else []
    figures: dict[str, list[list[tuple[float, float]]]] = {}
    for _ in range(args.rounds):
        for label, row in one_round(extra, args.repeats).items():
            figures.setdefault(label, []).append(row)
    print(f"medians over {args.rounds} fresh start(s), warmup {'off' if args.no_warmup else 'on'}, ms:")
    for label, rounds in figures.items():
        report(label, rounds)


def one_round(extra: list[str], n: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        tmp_dir = Path(tmp)
        with worker_process(tmp_dir, "unified", *extra) as unified:
            out["unified chat"] = [timed_stream(client, unified.url + "/v1/chat/completions", chat_body(i))
                                   for i in range(n)]
            out["unified /generate"] = [timed_stream(client, unified.url + "/generate", generate_body(i))
                                        for i in range(n)]
        bootstrap = free_port()
        with worker_process(tmp_dir, "prefill", "--disaggregation-mode", "prefill",
                            "--disaggregation-bootstrap-port", str(bootstrap), *extra) as prefill, \
                worker_process(tmp_dir, "decode", "--disaggregation-mode", "decode",
                               "--disaggregation-decode-enable-radix-cache",
                               "--disaggregation-decode-enable-conditional-agg", *extra) as decode:
            out["P->D chat"] = [timed_pd(client, prefill.url, bootstrap, decode.url, "/v1/chat/completions",
                                         chat_body(i + 3)) for i in range(n)]
            out["P->D /generate"] = [timed_pd(client, prefill.url, bootstrap, decode.url, "/generate",
                                              generate_body(i + 3)) for i in range(n)]
            out["D-local chat"] = [timed_stream(client, decode.url + "/v1/chat/completions",
                                                {**chat_body(i + 6), "do_local_prefill": True})
                                   for i in range(n)]
    return out


if __name__ == "__main__":
    main()
