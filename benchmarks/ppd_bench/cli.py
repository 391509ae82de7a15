"""``ppd-bench``: multi-turn load against any OpenAI-compatible endpoint.

    ppd-bench workload long-context-cpu --sessions 40 --out wl.jsonl     # write a workload file
    ppd-bench run --url http://127.0.0.1:30000 --workload wl.jsonl --rate 0.5 --out res.json
    ppd-bench plot res.json other.json --out plots/                      # PNGs
    ppd-bench compare --out compare.json                                 # ppd vs pd vs sglang-router... on one CPU 1P1D

Bad values exit with status 2 and one line naming them; progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from ppd_sim.workload import FIRST_TURN_CLASSES, GENERATORS, WORKLOAD_NAMES, Session, WorkloadSpec, generate_sessions
from ppd_sim.workload_file import read_sessions, write_sessions


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _workload_help() -> str:
    return (
        "; ".join(f"{g.name}: {g.description}" for g in GENERATORS.values() if "paper class:" not in g.description)
        + f"; paper classes: {', '.join(n for n, g in GENERATORS.items() if 'paper class' in g.description)}"
    )


def _add_shape(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("paper-class shape (ignored by long-context, chat, agent and their -cpu variants)")
    g.add_argument(
        "--first-turn", default="small", help=f"turn 1 class ({', '.join(FIRST_TURN_CLASSES)}); default small"
    )
    g.add_argument("--turns", default="4", help="turns per session, N or MIN-MAX; default 4")
    g.add_argument(
        "--jitter", type=float, default=0.25, help="token counts vary uniformly by +-this fraction; default 0.25"
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ppd-bench",
        description="Multi-turn benchmark for OpenAI-compatible endpoints (PPD routers, "
        "sglang-router, smg, any server): open-loop sessions, per-turn-class latency, goodput and route mix.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser(
        "workload",
        help="write a workload file (JSONL, one session per line)",
        description="Write a workload file: a built-in generator, or an imported recorded trace. "
        "ppd-sim --trace and ppd-bench run --workload read it.",
    )
    w.add_argument("name", nargs="?", help=f"generator: {_workload_help()}")
    w.add_argument(
        "--import",
        dest="import_trace",
        metavar="TRACE",
        help="convert a recorded trace instead: a request log JSONL (conversation_id, timestamp, prompt_tokens, "
        "completion_tokens[, latency_ms]) or ShareGPT JSON",
    )
    w.add_argument("--sessions", type=int, default=100, help="sessions to generate; default 100")
    w.add_argument("--seed", type=int, default=0, help="RNG seed; default 0")
    w.add_argument("--rate", type=float, help="also record Poisson arrival times at this many new sessions/s")
    w.add_argument(
        "--think-s", type=float, default=1.0, help="mean think time of the paper classes, seconds; default 1"
    )
    w.add_argument("--out", required=True, help="output JSONL path ('-' = stdout)")
    _add_shape(w)

    r = sub.add_parser(
        "run",
        help="drive an endpoint with multi-turn sessions and measure",
        description="Open-loop Poisson session arrivals (--rate new sessions/s); each turn is sent when "
        "the previous answer ends plus its think time, streamed, with the conversation id and SLO hints; "
        "output length forced with max_tokens + ignore_eos. Writes per-turn-class figures as JSON.",
    )
    _add_run_args(r)
    r.add_argument("--url", required=True, help="endpoint root or API base, e.g. http://127.0.0.1:30000 (or .../v1)")
    r.add_argument("--label", default="", help="name of this run in tables and plots (e.g. the policy)")
    r.add_argument("--model", help="model name to send; default: the first one GET /v1/models lists")
    r.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    r.add_argument("--out", help="write the result JSON here ('-' = stdout instead of the table)")
    r.add_argument(
        "--save-workload",
        metavar="FILE",
        help="write the sessions exactly as run (with arrival and think times) as a workload file for ppd-sim --trace",
    )
    _add_shape(r)

    pl = sub.add_parser(
        "plot",
        help="draw PNGs from result files",
        description="Latency vs load per system (failed points marked), the TTFT-TPOT trade-off across "
        "systems and weights, and route share over time. Accepts run results and compare results.",
    )
    pl.add_argument("results", nargs="+", help="result JSON files (ppd-bench run --out or ppd-bench compare --out)")
    pl.add_argument("--out", required=True, help="directory for the PNGs (created)")

    c = sub.add_parser(
        "compare",
        help="ppd vs pd vs local vs threshold vs sglang-router vs smg on one embedded CPU 1P1D",
        description="Start ONE embedded 1P1D ppd-worker pair (SmolLM2), then in front of the same workers, "
        "one system after another: ppd-server --policy ppd/pd/local/threshold:N, sglang-router (PD mode), smg "
        "(PD mode); the same workload and arrivals for each; the workers' caches are flushed between systems. "
        "Writes one JSON and prints a side-by-side table.",
    )
    _add_run_args(c, default_rate=0.2, default_sessions=4, default_duration=30.0, default_deadline=150.0)
    c.add_argument(
        "--systems",
        default="ppd,sglang-router,pd,local,threshold:256,smg",
        help="comma-separated, run in this order: ppd, pd, local, threshold:N, ratio:X (ppd-server policies; "
        "POLICY@tpot=W: its clients send TPOT weight W, e.g. ppd@tpot=1,ppd@tpot=8 is a live weights sweep), "
        "sglang-router, smg; default ppd,sglang-router,pd,local,threshold:256,smg",
    )
    c.add_argument(
        "--baseline", default="sglang-router", help="system the ratios are taken against; default sglang-router"
    )
    c.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the system list this many times, reversed every other round (ABBA: a drift in the "
        "machine's speed weighs on every system alike); figures pool the rounds; default 1",
    )
    c.add_argument("--worker-threads", type=int, default=1, help="torch threads per worker (one core each); default 1")
    c.add_argument("--log-dir", help="where worker/router logs go (default: a temp dir)")
    c.add_argument("--out", help="write the comparison JSON here")
    _add_shape(c)
    return p


def _add_run_args(
    p: argparse.ArgumentParser,
    default_rate: float = 0.5,
    default_sessions: int = 20,
    default_duration: float = 60.0,
    default_deadline: float | None = None,
) -> None:
    g = p.add_argument_group("load")
    g.add_argument(
        "--workload",
        default="long-context-cpu",
        help=f"a generator name or a workload JSONL file; default long-context-cpu. Generators: {_workload_help()}",
    )
    g.add_argument(
        "--rate",
        type=float,
        default=default_rate,
        help=f"new sessions per second, Poisson (requests/s = rate x turns per session); default {default_rate:g}",
    )
    g.add_argument(
        "--sessions",
        type=int,
        default=default_sessions,
        help=f"at most this many sessions start; default {default_sessions}",
    )
    g.add_argument(
        "--duration",
        type=float,
        default=default_duration,
        help=f"sessions start within this many seconds; default {default_duration:g}",
    )
    bound = f"{default_deadline:g} per system" if default_deadline else "duration + 120"
    g.add_argument(
        "--deadline",
        type=float,
        default=default_deadline,
        help=f"the whole run ends after this many seconds; turns still running then count as failed (default: {bound})",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the sessions, arrivals and prompt text; default 0")
    g.add_argument(
        "--think-s",
        type=float,
        default=1.0,
        help="mean think time for workloads that carry none (paper classes, old traces), seconds; default 1",
    )
    g.add_argument("--request-timeout", type=float, default=300.0, help="per-turn timeout, seconds; default 300")
    h = p.add_argument_group("hints and SLOs (sent on every turn; the SLOs also define goodput)")
    h.add_argument("--slo-ttft-ms", type=float, help="TTFT target, ms (header X-SLO-TTFT-Ms; also defines goodput)")
    h.add_argument("--slo-tpot-ms", type=float, help="TPOT target, ms (header X-SLO-TPOT-Ms; also defines goodput)")
    h.add_argument("--w-ttft", type=float, default=1.0, help="TTFT weight (ppd.weights.ttft); default 1")
    h.add_argument("--w-tpot", type=float, default=1.0, help="TPOT weight (ppd.weights.tpot); default 1")
    h.add_argument(
        "--no-body-hints", action="store_true", help="send the hints as headers only, not the 'ppd' body field"
    )
    h.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos (answers may end early)")
    o = p.add_argument_group("output")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _turns(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        return int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ValueError(f"bad --turns {text!r}; write N or MIN-MAX, e.g. 4 or 2-8") from None


def load_sessions(args: argparse.Namespace, count: int) -> tuple[list[Session], str]:
    """The sessions a command runs: a generator's (``count`` of them) or a file's; ValueError names the value."""
    name = args.workload if hasattr(args, "workload") else args.name
    if name in GENERATORS:
        tmin, tmax = _turns(args.turns)
        spec = WorkloadSpec(
            qps=1.0,
            duration_s=1.0,
            workload=name,
            first_turn=args.first_turn,
            turns_min=tmin,
            turns_max=tmax,
            think_s=args.think_s,
            jitter=args.jitter,
            seed=args.seed,
        )
        spec.validate()
        return generate_sessions(name, count, args.seed, spec), name
    if Path(name).is_file():
        return read_sessions(name), name
    raise ValueError(f"unknown workload {name!r}: not a generator ({', '.join(WORKLOAD_NAMES)}) nor a file")


def _write_json(path: str, doc: Any) -> None:
    text = json.dumps(doc, indent=1)
    if path == "-":
        print(text)
        return
    try:
        Path(path).write_text(text + "\n")
    except OSError as e:
        raise ValueError(f"cannot write --out {path!r}: {e.strerror}") from None


def run_config(args: argparse.Namespace, url: str, label: str = "") -> Any:
    from ppd_bench.driver import RunConfig

    return RunConfig(
        url=url,
        rate=args.rate,
        sessions=args.sessions,
        duration_s=args.duration,
        deadline_s=args.deadline,
        model=getattr(args, "model", None),
        seed=args.seed,
        think_s=args.think_s,
        slo_ttft_ms=args.slo_ttft_ms,
        slo_tpot_ms=args.slo_tpot_ms,
        w_ttft=args.w_ttft,
        w_tpot=args.w_tpot,
        body_hints=not args.no_body_hints,
        ignore_eos=not args.no_ignore_eos,
        request_timeout_s=args.request_timeout,
        label=label,
        api_key=getattr(args, "api_key", None),
        progress=not args.no_progress,
    )


def _cmd_workload(args: argparse.Namespace) -> int:
    if args.import_trace:
        from ppd_bench.importer import import_trace

        sessions = import_trace(args.import_trace)
    elif args.name:
        if args.name not in GENERATORS:
            raise ValueError(f"unknown workload {args.name!r}; choose one of {', '.join(WORKLOAD_NAMES)}")
        if not 1 <= args.sessions <= 100_000:
            raise ValueError(f"--sessions must be in 1..100000, got {args.sessions}")
        sessions, _ = load_sessions(args, args.sessions)
    else:
        raise ValueError("name a generator or pass --import TRACE")
    if args.rate is not None:
        if not (math.isfinite(args.rate) and args.rate > 0):
            raise ValueError(f"--rate must be a positive number of sessions/s, got {args.rate}")
        import random

        from ppd_sim.workload import poisson_arrivals

        arrivals = poisson_arrivals(random.Random(args.seed), args.rate, count=len(sessions))
        sessions = [Session(s.session_id, s.turns, s.think_ms, a) for s, a in zip(sessions, arrivals)]
    if args.out == "-":
        for s in sessions:
            print(json.dumps(s.to_json(), separators=(",", ":")))
        return 0
    try:
        n = write_sessions(args.out, sessions)
    except OSError as e:
        raise ValueError(f"cannot write --out {args.out!r}: {e.strerror}") from None
    turns = sum(len(s.turns) for s in sessions)
    print(f"ppd-bench: wrote {n} sessions ({turns} turns) to {args.out}", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ppd_bench.driver import run, sessions_from_result
    from ppd_bench.report import run_table

    config = run_config(args, args.url, args.label)
    config.validate()
    if not 1 <= args.sessions <= 100_000:
        raise ValueError(f"--sessions must be in 1..100000, got {args.sessions}")
    sessions, name = load_sessions(args, args.sessions)
    result = run(config, sessions, name)
    if args.save_workload:
        try:
            write_sessions(args.save_workload, sessions_from_result(result))
        except OSError as e:
            raise ValueError(f"cannot write --save-workload {args.save_workload!r}: {e.strerror}") from None
    if args.out:
        _write_json(args.out, result)
    if args.out != "-":
        print(run_table(result))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ppd_bench.plot import load_results, plot_all

    paths = plot_all(load_results(args.results), args.out)
    for p in paths:
        print(p)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ppd_bench.compare import CompareConfig, compare
    from ppd_bench.report import compare_table

    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    cfg = CompareConfig(
        systems=systems,
        baseline=args.baseline,
        worker_threads=args.worker_threads,
        log_dir=args.log_dir,
        rounds=args.rounds,
    )
    cfg.validate()
    if not 1 <= args.sessions <= 100_000:
        raise ValueError(f"--sessions must be in 1..100000, got {args.sessions}")
    run_cfg = run_config(args, "http://127.0.0.1:1")
    run_cfg.validate()
    sessions, name = load_sessions(args, args.sessions)
    doc = compare(cfg, run_cfg, sessions, name, checkpoint=(lambda d: _write_json(args.out, d)) if args.out else None)
    if args.out:
        _write_json(args.out, doc)
    print(compare_table(doc["systems"], args.baseline))
    return 0


COMMANDS = {"workload": _cmd_workload, "run": _cmd_run, "plot": _cmd_plot, "compare": _cmd_compare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as e:  # BenchError is one too
        print(f"ppd-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a worker or front end that would not start
        print(f"ppd-bench {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ppd-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
