"""``ppd-sim``: run routing policies side by side on a simulated GPU fleet.

    ppd-sim --policies pd,local,threshold:512,ppd --cluster 1P3D --qps 4 --duration 120 \\
            --model llama-3.1-8b --gpu h100 --link-gbs 25 --workload mid_bal --seed 0

Every policy sees the same workload (same seed). Prints one table (metrics down, policies
across); ``--json PATH`` (``-`` = stdout) writes the figures. Bad values exit with status 2 and
a message naming them; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from ppd_server.profiling import DEFAULT_PROFILE, load_profile
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.policies import POLICY_SPECS, make_policy
from ppd_server.routing.types import CostCoefficients
from ppd_sim.cluster import ClusterSpec, Hardware
from ppd_sim.engine import (
    DEFAULT_CLIENT_MAX_TOKENS,
    LINK_BACKLOG_KINDS,
    LIVE_POLL_INTERVAL_MS,
    RequestHints,
    RouterBehaviour,
    Simulation,
)
from ppd_sim.presets import GPUS, MODELS, kv_capacity_tokens, model_preset, preset_profile
from ppd_sim.report import DEFAULT_REQUEST_TIMEOUT_S, format_table, reason_counts, summarize
from ppd_sim.workload import FIRST_TURN_CLASSES, WORKLOAD_NAMES, Conversation, WorkloadSpec, synthetic
from ppd_sim.workload_file import load_trace

DEFAULT_POLICIES = "pd,local,threshold:512,ppd"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ppd-sim",
        description="Simulate PPD routing policies on a GPU-scale P/D fleet (the router's own policy code).",
    )
    p.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help=f"comma-separated policy specs ({', '.join(POLICY_SPECS)}); default {DEFAULT_POLICIES}",
    )
    p.add_argument(
        "--cluster", default="1P3D", help="fleet shape: counts of P, D, R (unified), e.g. 1P3D, 2P2D, 4R; default 1P3D"
    )
    g = p.add_argument_group("hardware")
    g.add_argument("--model", default="llama-3.1-8b", help=f"model preset ({', '.join(MODELS)}); default llama-3.1-8b")
    g.add_argument("--gpu", default="h100", help=f"GPU preset ({', '.join(GPUS)}); default h100")
    g.add_argument(
        "--profile", help="a cost profile JSON (as `ppd-server profile` writes) instead of the roofline preset"
    )
    g.add_argument(
        "--link-gbs", type=float, default=25.0, help="P->D KV link bandwidth in GB/s (bytes), shared FIFO; default 25"
    )
    g.add_argument("--chunk-tokens", type=int, default=8192, help="chunked-prefill budget per iteration; default 8192")
    g.add_argument(
        "--kv-capacity-tokens",
        type=int,
        help="KV slots per worker (default: GPU memory x 0.85 minus weights; 0 = unbounded)",
    )
    g.add_argument(
        "--page-tokens",
        type=int,
        default=1,
        help="prefix-cache page size (SGLang --page-size): cache hits are whole pages; default 1 (token-granular)",
    )
    g.add_argument(
        "--request-overhead-ms",
        type=float,
        default=0.0,
        help="per-request time outside the engine's forward passes (router hop, HTTP, chat template and "
        "tokenization, stream relay; benchmarks/validate_sim.py measures it): every turn reaches its worker this "
        "much after it is sent; default 0",
    )
    g.add_argument(
        "--no-decode-radix",
        action="store_true",
        help="decode workers keep no prefix between turns (P->D always ships the whole prompt; no D-local)",
    )
    r = p.add_argument_group("router calibration (default: the router knows the true coefficients)")
    r.add_argument(
        "--router-profile",
        help="profile JSON the router's cost model starts from, or 'builtin' (ppd-server's default, a CPU profile)",
    )
    r.add_argument(
        "--online-fit",
        action="store_true",
        help="feed the router's cost model every finished turn, as the live router does",
    )
    k = p.add_argument_group("what the router knows (default: what the live ppd-server knows)")
    k.add_argument(
        "--poll-interval-ms",
        type=float,
        default=LIVE_POLL_INTERVAL_MS,
        help="the router sees workers' load (running, waiting, KV used, context) as of its last poll, this often; "
        "its own in-flight counts stay current; 0 = it sees every load as it is now; default "
        f"{LIVE_POLL_INTERVAL_MS:g} "
        "(ppd-server's --load-interval)",
    )
    k.add_argument(
        "--client-max-tokens",
        default=str(DEFAULT_CLIENT_MAX_TOKENS),
        help="the max_tokens every client sends: the router decides knowing this cap, not the answer's length, and a "
        "longer answer stops at it; 'exact' = clients send each answer's true length (as a benchmark forcing lengths "
        f"does); default {DEFAULT_CLIENT_MAX_TOKENS} (no preset class's answer is longer)",
    )
    k.add_argument(
        "--link-backlog",
        choices=LINK_BACKLOG_KINDS,
        default="router",
        help="link backlog the router sees: 'router' = predicted KV bytes of every P->D turn still open (the live "
        "router's count), 'true' = the bytes really queued on the link; default router",
    )
    w = p.add_argument_group("workload")
    w.add_argument(
        "--qps",
        type=float,
        default=4.0,
        help="new conversations (sessions) per second, Poisson; requests/s = this x turns per conversation; default 4",
    )
    w.add_argument("--duration", type=float, default=60.0, help="seconds during which conversations start; default 60")
    w.add_argument(
        "--workload", default="mid_bal", help=f"turn 2+ class ({', '.join(WORKLOAD_NAMES)}); default mid_bal"
    )
    w.add_argument(
        "--first-turn", default="small", help=f"turn 1 class ({', '.join(FIRST_TURN_CLASSES)}); default small"
    )
    w.add_argument("--turns", default="4", help="turns per conversation, N or MIN-MAX; default 4")
    w.add_argument(
        "--think-s", type=float, default=1.0, help="mean think time between turns, seconds (exponential); default 1"
    )
    w.add_argument(
        "--jitter", type=float, default=0.25, help="token counts vary uniformly by +-this fraction; default 0.25"
    )
    w.add_argument("--trace", help="JSONL trace: one conversation per line, [[input_tokens, output_tokens], ...]")
    w.add_argument("--seed", type=int, default=0)
    s = p.add_argument_group("client hints")
    s.add_argument("--slo-ttft-ms", type=float, help="TTFT target (hard limit for ppd; attainment is reported)")
    s.add_argument("--slo-tpot-ms", type=float, help="TPOT target (hard limit for ppd; attainment is reported)")
    s.add_argument("--w-ttft", type=float, default=1.0, help="request TTFT weight; default 1")
    s.add_argument("--w-tpot", type=float, default=1.0, help="request TPOT weight; default 1")
    s.add_argument(
        "--request-timeout-s",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="a turn not finished this long after it was sent failed (counted in the success rate and SLO attainment; "
        f"the fleet still serves it); default {DEFAULT_REQUEST_TIMEOUT_S:g} (ppd-server's --request-timeout)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", help="write the figures as JSON to this path ('-' = stdout, instead of the table)")
    o.add_argument("--quiet", action="store_true", help="no progress on stderr")
    o.add_argument(
        "--reasons",
        action="store_true",
        help="after the table, why turns 2+ went where they went: each policy's most common decision reasons "
        "(figures masked) and their counts; in the JSON as 'turn2plus_reasons'",
    )
    return p


def _turns(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ValueError(f"bad --turns {text!r}; write N or MIN-MAX, e.g. 4 or 2-8") from None
    return a, b


def _check(name: str, value: float | None, lo: float, hi: float, lo_open: bool = True) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value}")


def _hardware(args: argparse.Namespace) -> tuple[Hardware, dict[str, Any]]:
    model = model_preset(args.model)
    if args.profile:
        profile = load_profile(args.profile)
    else:
        profile = preset_profile(args.model, args.gpu)
    kv_bytes = int(profile.get("kv_bytes_per_token") or model.kv_bytes_per_token)
    capacity = args.kv_capacity_tokens
    if capacity is None:
        capacity = kv_capacity_tokens(args.model, args.gpu, kv_bytes)
    _check("--kv-capacity-tokens", capacity, 0, 1e9, lo_open=False)
    _check("--chunk-tokens", args.chunk_tokens, 1, 1_048_576, lo_open=False)
    _check("--link-gbs", args.link_gbs, 0, 10_000)
    _check("--page-tokens", args.page_tokens, 1, 4096, lo_open=False)
    _check("--request-overhead-ms", args.request_overhead_ms, 0, 60_000, lo_open=False)
    hw = Hardware(
        coefficients=CostCoefficients.from_dict(profile["coefficients"]),
        kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=capacity,
        chunk_tokens=args.chunk_tokens,
        link_gb_per_s=args.link_gbs,
        decode_local_prefill=not args.no_decode_radix,
        decode_radix_cache=not args.no_decode_radix,
        page_tokens=args.page_tokens,
        request_overhead_ms=args.request_overhead_ms,
        model=str(profile.get("model") or args.model),
    )
    return hw, profile


def _workload(args: argparse.Namespace) -> tuple[Conversation, ...]:
    tmin, tmax = _turns(args.turns)
    spec = WorkloadSpec(
        args.qps, args.duration, args.workload, args.first_turn, tmin, tmax, args.think_s, args.jitter, args.seed
    )
    return load_trace(args.trace, spec) if args.trace else synthetic(spec)


def router_behaviour(args: argparse.Namespace) -> RouterBehaviour:
    """What the simulated router knows (poll lag, the clients' max_tokens, the link backlog)."""
    _check("--poll-interval-ms", args.poll_interval_ms, 0, 3.6e6, lo_open=False)
    text = str(args.client_max_tokens).strip().lower()
    if text == "exact":
        cap = None
    else:
        try:
            cap = int(text)
        except ValueError:
            raise ValueError(
                f"bad --client-max-tokens {args.client_max_tokens!r}; give a token count or 'exact'"
            ) from None
        if not 1 <= cap <= 1_048_576:
            raise ValueError(f"--client-max-tokens must be in [1, 1048576] or 'exact', got {cap}")
    return RouterBehaviour(args.poll_interval_ms, cap, args.link_backlog)


def router_profile(args: argparse.Namespace, hardware_profile: dict[str, Any]) -> dict[str, Any] | None:
    """The profile the simulated router's cost model starts from; None = it knows the truth."""
    if args.router_profile == "builtin":
        return DEFAULT_PROFILE
    if args.router_profile:
        return load_profile(args.router_profile)
    return hardware_profile if args.online_fit else None


def prepare(args: argparse.Namespace) -> Prepared:
    """Validate everything before simulating anything; ValueError names the bad value."""
    policies = [make_policy(spec) for spec in args.policies.split(",") if spec.strip()]
    if not policies:
        raise ValueError(f"--policies {args.policies!r} names no policy; choose from {', '.join(POLICY_SPECS)}")
    spec = ClusterSpec.parse(args.cluster)
    hw, profile = _hardware(args)
    _check("--slo-ttft-ms", args.slo_ttft_ms, 0, 3.6e6)
    _check("--slo-tpot-ms", args.slo_tpot_ms, 0, 3.6e6)
    _check("--w-ttft", args.w_ttft, 0, 1000, lo_open=False)
    _check("--w-tpot", args.w_tpot, 0, 1000, lo_open=False)
    _check("--request-timeout-s", args.request_timeout_s, 0, 86_400)
    convs = _workload(args)
    if not convs:
        raise ValueError(f"no conversation starts within --duration {args.duration}s at --qps {args.qps}; raise either")
    biggest = max(convs, key=lambda c: c.peak_tokens)
    if hw.kv_capacity_tokens and biggest.peak_tokens > hw.kv_capacity_tokens:
        raise ValueError(
            f"conversation {biggest.conversation_id} needs {biggest.peak_tokens} KV tokens, "
            f"more than --kv-capacity-tokens {hw.kv_capacity_tokens}"
        )
    hints = RequestHints(args.w_ttft, args.w_tpot, args.slo_ttft_ms, args.slo_tpot_ms)
    router_profile(args, profile)  # a bad --router-profile fails here, before any run
    router_behaviour(args)  # and so does a bad --poll-interval-ms / --client-max-tokens
    return policies, spec, hw, profile, convs, hints


Prepared = tuple[list[Any], ClusterSpec, Hardware, dict[str, Any], tuple[Conversation, ...], RequestHints]


def simulation(args: argparse.Namespace, policy: Any, prepared: Prepared, keep_reasons: bool = True) -> Simulation:
    """One policy's run as ``ppd-sim`` makes it from ``args`` and :func:`prepare`'s result: a fresh
    cost model (each policy fits its own), the router behaviour the options ask for. The one place
    that assembles a run, for the CLI and the benchmarks alike."""
    _, spec, hw, profile, convs, hints = prepared
    start = router_profile(args, profile)
    cost_model = CostModel(start) if start is not None else None
    behaviour = router_behaviour(args)
    return Simulation(policy, spec, hw, convs, hints, cost_model, args.online_fit, behaviour, keep_reasons=keep_reasons)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        prepared = prepare(args)
    except ValueError as e:
        parser.error(str(e))
    policies, spec, hw, profile, convs, _ = prepared
    behaviour = router_behaviour(args)
    total_turns = sum(len(c.turns) for c in convs)
    rps = total_turns / args.duration  # offered requests per second (turns of the conversations started per second)
    summaries = []
    for policy in policies:
        sim = simulation(args, policy, prepared, keep_reasons=args.reasons)
        started = time.monotonic()
        last = [started]

        def progress(now_ms: float, finished: int, name: str = policy.spec, last: list[float] = last) -> None:
            if not args.quiet and time.monotonic() - last[0] >= 2.0:
                last[0] = time.monotonic()
                print(
                    f"ppd-sim: {name}: {now_ms / 1000:.0f}s simulated, {finished}/{total_turns} turns done",
                    file=sys.stderr,
                )

        result = sim.run(progress)
        if not args.quiet:
            print(
                f"ppd-sim: {policy.spec}: {len(result.requests)} turns in {time.monotonic() - started:.1f}s",
                file=sys.stderr,
            )
        summaries.append(summarize(result, args.slo_ttft_ms, args.slo_tpot_ms, args.request_timeout_s))
        if args.reasons:
            summaries[-1]["turn2plus_reasons"] = reason_counts(result)
    config = {
        "cluster": str(spec),
        "model": args.model,
        "gpu": args.gpu,
        "profile": args.profile,
        "coefficients": hw.coefficients.to_dict(),
        "kv_bytes_per_token": hw.kv_bytes_per_token,
        "kv_capacity_tokens": hw.kv_capacity_tokens,
        "chunk_tokens": hw.chunk_tokens,
        "link_gbs": hw.link_gb_per_s,
        "decode_radix_cache": hw.decode_radix_cache,
        "page_tokens": hw.page_tokens,
        "request_overhead_ms": hw.request_overhead_ms,
        "qps": args.qps,
        "duration_s": args.duration,
        "workload": "trace:" + args.trace if args.trace else args.workload,
        "first_turn": args.first_turn,
        "turns": args.turns,
        "think_s": args.think_s,
        "jitter": args.jitter,
        "seed": args.seed,
        "conversations": len(convs),
        "turns_total": total_turns,
        "requests_per_s": rps,
        "request_timeout_s": args.request_timeout_s,
        "slo_ttft_ms": args.slo_ttft_ms,
        "slo_tpot_ms": args.slo_tpot_ms,
        "w_ttft": args.w_ttft,
        "w_tpot": args.w_tpot,
        "router_profile": args.router_profile,
        "online_fit": args.online_fit,
        "poll_interval_ms": behaviour.poll_interval_ms,
        "client_max_tokens": behaviour.client_max_tokens,
        "link_backlog": behaviour.link_backlog,
    }
    if args.json:
        text = json.dumps({"config": config, "profile_source": profile.get("source"), "results": summaries}, indent=2)
        if args.json == "-":
            print(text)
            return 0
        try:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            parser.error(f"cannot write --json {args.json!r}: {e.strerror}")
    workload = f"trace {args.trace}" if args.trace else f"{args.first_turn}->{args.workload}"
    print(
        f"{spec} {args.model}@{args.gpu if not args.profile else args.profile}, link {args.link_gbs:g} GB/s, "
        f"{len(convs)} conversations ({total_turns} turns, {workload}, turns {args.turns}) at {args.qps:g} new "
        "sessions/s "
        f"(~{rps:.3g} requests/s) for {args.duration:g}s, seed {args.seed}"
    )
    print(format_table(summaries))
    for s in summaries:
        if "turn2plus_reasons" in s:
            total = s["turn2plus_reasons"]["turns"] or 1
            print(f"\n{s['policy']}: why turns 2+ went where they went (most common reasons, figures masked)")
            for kind, n in s["turn2plus_reasons"]["top"].items():
                print(f"  {n:>7}  {100 * n / total:5.1f}%  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
