"""Cold-start probe (not a test): request 1 vs 2 vs 3 latency of fresh real SmolLM2 workers.

    python -m tests.engine.cold_start_probe [--no-warmup]

Starts a unified worker, then a fresh prefill + decode pair (conditional agg on), and times
three requests of the same shape (different words, so no cached prefix) per path, in the order
a fresh cluster sees them: unified chat, unified /generate; P->D chat, P->D /generate,
D-local chat; with ``--router``, the same fresh pair behind a real ``ppd-server`` (explicit
--prefill/--decode) serving three two-turn conversations. Prints TTFT (first streamed chunk) and
end-to-end ms per request: the median over ``--rounds`` fresh starts (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.processes import free_port, pd_pair, router_argv, started, worker_process

TOPICS = ["oceans", "volcanoes", "glaciers", "deserts", "forests", "rivers", "islands", "canyons"]


def chat_body(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    # Own system prompt: the template's default one would be a shared cached prefix, making
    # request 2+ cheaper than request 1 for a reason that has nothing to do with a cold start.
    return {
        "messages": [
            {"role": "system", "content": f"{topic.capitalize()} are your only subject."},
            {"role": "user", "content": f"Write two sentences about {topic} for a child."},
        ],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }


def generate_body(i: int) -> dict:
    topic = TOPICS[(i + 3) % len(TOPICS)]
    return {
        "text": f"<|im_start|>user\nTell me one fact about {topic}.<|im_end|>\n<|im_start|>assistant\n",
        "sampling_params": {"temperature": 0, "max_new_tokens": 8},
        "stream": True,
    }


def timed_stream(client: httpx.Client, url: str, body: dict) -> tuple[float, float]:
    began = time.perf_counter()
    ttft = None
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if ttft is None and line.startswith("data: ") and line != "data: [DONE]":
                ttft = time.perf_counter() - began
    return (ttft or 0.0) * 1000, (time.perf_counter() - began) * 1000


def timed_pd(
    client: httpx.Client, prefill: str, bootstrap_port: int, decode: str, path: str, body: dict
) -> tuple[float, float]:
    """Prefill and decode requests sent together, like a router does; times the decode stream."""
    body = {
        **body,
        "bootstrap_host": "127.0.0.1",
        "bootstrap_port": bootstrap_port,
        "bootstrap_room": random.randrange(2**63),
    }
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
    for i in range(min(len(r) for r in rounds)):
        ttft = statistics.median(r[i][0] for r in rounds)
        e2e = statistics.median(r[i][1] for r in rounds)
        cells.append(f"#{i + 1} ttft {ttft:6.1f} e2e {e2e:6.1f}")
    print(f"{label:22s} {'  '.join(cells)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warmup", action="store_true", help="start the workers with --no-warmup")
    parser.add_argument("--repeats", type=int, default=3, help="requests per path")
    parser.add_argument("--rounds", type=int, default=1, help="fresh starts; medians are printed")
    parser.add_argument("--router", action="store_true", help="conversations through ppd-server")
    args = parser.parse_args()
    extra = ["--no-warmup"] if args.no_warmup else []
    figures: dict[str, list[list[tuple[float, float]]]] = {}
    for _ in range(args.rounds):
        measured = router_round(extra, args.repeats) if args.router else one_round(extra, args.repeats)
        for label, row in measured.items():
            figures.setdefault(label, []).append(row)
    print(f"medians over {args.rounds} fresh start(s), warmup {'off' if args.no_warmup else 'on'}, ms:")
    for label, rounds in figures.items():
        report(label, rounds)


def router_round(extra: list[str], n: int) -> dict[str, list[tuple[float, float]]]:
    """``n`` two-turn conversations through ppd-server over a fresh 1P1D pair; rows are
    labelled by turn and the route the router took."""
    out: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        tmp_dir = Path(tmp)
        with pd_pair(tmp_dir, *extra) as (prefill, decode):
            bootstrap = prefill.bootstrap_port
            port = free_port()
            argv = router_argv(port, "--prefill", prefill.url, str(bootstrap), "--decode", decode.url)
            with started("ppd-server", argv, port, tmp_dir / "router.log") as router:
                turns: dict[str, list[tuple[float, float]]] = {}
                for i in range(n):
                    messages = chat_body(i)["messages"]
                    for turn in (1, 2):
                        ttft, e2e, route, answer = timed_turn(client, router.url, f"conv-{i}", messages)
                        turns.setdefault(f"router turn {turn} {route}", []).append((ttft, e2e))
                        messages = messages + [
                            {"role": "assistant", "content": answer},
                            {"role": "user", "content": "Now one more sentence, please."},
                        ]
                out.update(turns)
    return out


def timed_turn(
    client: httpx.Client, url: str, conversation: str, messages: list[dict]
) -> tuple[float, float, str, str]:
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "stream": True}
    began = time.perf_counter()
    ttft, answer = None, []
    with client.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"X-PPD-Conversation-Id": conversation}
    ) as response:
        response.raise_for_status()
        route = response.headers.get("X-PPD-Route", "?")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ttft = ttft if ttft is not None else time.perf_counter() - began
            for choice in json.loads(line[6:]).get("choices", []):
                answer.append(choice.get("delta", {}).get("content") or "")
    return (ttft or 0.0) * 1000, (time.perf_counter() - began) * 1000, route, "".join(answer)


def one_round(extra: list[str], n: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        tmp_dir = Path(tmp)
        with worker_process(tmp_dir, "unified", *extra) as unified:
            out["unified chat"] = [
                timed_stream(client, unified.url + "/v1/chat/completions", chat_body(i)) for i in range(n)
            ]
            out["unified /generate"] = [
                timed_stream(client, unified.url + "/generate", generate_body(i)) for i in range(n)
            ]
        with pd_pair(tmp_dir, *extra) as (prefill, decode):
            bootstrap = prefill.bootstrap_port
            out["P->D chat"] = [
                timed_pd(client, prefill.url, bootstrap, decode.url, "/v1/chat/completions", chat_body(i + 3))
                for i in range(n)
            ]
            out["P->D /generate"] = [
                timed_pd(client, prefill.url, bootstrap, decode.url, "/generate", generate_body(i + 3))
                for i in range(n)
            ]
            out["D-local chat"] = [
                timed_stream(
                    client, decode.url + "/v1/chat/completions", {**chat_body(i + 6), "do_local_prefill": True}
                )
                for i in range(n)
            ]
    return out


if __name__ == "__main__":
    main()
