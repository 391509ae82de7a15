"""Cold-start probe (not a test): request 1 vs 2 vs 3 latency of fresh real SmolLM2 workers.

    python -m tests.engine.cold_start_probe [--no-warmup]

Starts a unified worker, then a fresh prefill + decode pair (conditional agg on), and times
three requests of the same shape (different words, so no prefix hits) per path, in the order
a fresh cluster sees them: unified chat, unified /generate; P->D chat, P->D /generate,
D-local chat. Prints TTFT (first streamed chunk) and end-to-end ms per request.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import httpx

from .launch import worker_process

TOPICS = ["oceans", "volcanoes", "glaciers", "deserts", "forests", "rivers", "islands", "canyons"]


def chat_body(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    return {"messages": [{"role": "user", "content": f"Write two sentences about {topic} for a child."}],
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
        import threading

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


def report(label: str, figures: list[tuple[float, float]]) -> None:
    cells = "  ".join(f"#{i + 1} ttft {t:6.1f} e2e {e:6.1f}" for i, (t, e) in enumerate(figures))
    print(f"{label:28s} {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warmup", action="store_true", help="start the workers with --no-warmup")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    extra = ["--no-warmup"] if args.no_warmup else []
    n = args.repeats
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        tmp_dir = Path(tmp)
        with worker_process(tmp_dir, "unified", *extra) as unified:
            report("unified chat", [timed_stream(client, unified.url + "/v1/chat/completions", chat_body(i))
                                    for i in range(n)])
            report("unified /generate", [timed_stream(client, unified.url + "/generate", generate_body(i))
                                         for i in range(n)])
        bootstrap = str(_free_port())
        with worker_process(tmp_dir, "prefill", "--disaggregation-mode", "prefill",
                            "--disaggregation-bootstrap-port", bootstrap, *extra) as prefill, \
                worker_process(tmp_dir, "decode", "--disaggregation-mode", "decode",
                               "--disaggregation-decode-enable-radix-cache",
                               "--disaggregation-decode-enable-conditional-agg", *extra) as decode:
            report("P->D chat", [timed_pd(client, prefill.url, int(bootstrap), decode.url,
                                          "/v1/chat/completions", chat_body(i + 3)) for i in range(n)])
            report("P->D /generate", [timed_pd(client, prefill.url, int(bootstrap), decode.url, "/generate",
                                               generate_body(i + 3)) for i in range(n)])
            report("D-local chat", [timed_stream(client, decode.url + "/v1/chat/completions",
                                                 {**chat_body(i + 6), "do_local_prefill": True})
                                    for i in range(n)])


def _free_port() -> int:
    from .launch import free_port

    return free_port()


if __name__ == "__main__":
    main()
