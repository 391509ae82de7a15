"""``ppd-server``: serve (default) or ``ppd-server profile`` (its own module, ``profile_cli``).

Every serve flag maps to a :class:`~ppd_server.config.RouterConfig` field; defaults come from
the dataclass; ``PPD_<FIELD>`` environment variables and ``--config file.yaml`` fill what the
flags leave unset. With no ``--prefill/--decode/--worker`` an embedded cluster is started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ppd_server.config import BACKENDS, ConfigError, RouterConfig, load_config
from ppd_server.config import default_hint as _d


def build_parser() -> argparse.ArgumentParser:
    from ppd_server.routing.policies import POLICY_SPECS

    p = argparse.ArgumentParser(
        prog="ppd-server",
        description="PPD router: an OpenAI-compatible front door over SGLang prefill/decode workers that "
        "decides per turn between D-local append-prefill and P->D. With no workers given it "
        "starts an embedded cluster of ppd-worker processes. Subcommand: `ppd-server profile`.",
        epilog="Every flag can also be set as PPD_<NAME> in the environment (e.g. PPD_POLICY=pd) or in a "
        "YAML file given with --config (keys = flag names with underscores). Flags win over env over YAML.",
    )
    g = p.add_argument_group("front door")
    g.add_argument("--host", help="address to bind" + _d("host"))
    g.add_argument("--port", type=int, help="port to bind" + _d("port"))
    g.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on the OpenAI/SGLang endpoints; repeatable: several keys are "
        "several tenants, each with its own conversation ids",
    )
    g.add_argument("--api-key-file", metavar="PATH", help="more API keys, one per line ('#' comments)")
    g.add_argument(
        "--admin-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on /admin/* and /flush_cache (with API keys but no admin key "
        "those answer 403)",
    )
    g.add_argument(
        "--log-content",
        action="store_true",
        default=None,
        help="opt in: record prompts on the ppd.route trace span (off: no prompt or completion is ever logged "
        "or traced)",
    )
    g.add_argument(
        "--shared-prefix-cache",
        action="store_true",
        default=None,
        help="with several API keys, let tenants share the workers' prefix caches (a common system prompt is "
        "cached once, but a tenant can then tell by timing or cached_tokens whether another sent the same "
        "prefix); off: each tenant's requests carry its own cache_salt",
    )
    g.add_argument("--config", help="YAML file with settings")
    g = p.add_argument_group("workers (none given: embedded cluster)")
    g.add_argument(
        "--prefill",
        nargs="+",
        action="append",
        metavar=("URL", "BOOTSTRAP_PORT"),
        help="a prefill worker, optionally with its bootstrap port (else read from /server_info); repeatable",
    )
    g.add_argument("--decode", action="append", metavar="URL", help="a decode worker; repeatable")
    g.add_argument("--worker", action="append", metavar="URL", help="a unified (non-disaggregated) worker; repeatable")
    g = p.add_argument_group("routing")
    g.add_argument("--policy", help=f"routing policy: {', '.join(POLICY_SPECS)}" + _d("policy"))
    g.add_argument(
        "--profile",
        help="cost-model profile JSON saved by `ppd-server profile`, or a preset: "
        "builtin (SmolLM2 on the CPU engine), h200-ppd-engine-llama8b",
    )
    g.add_argument(
        "--tokenizer",
        help="tokenizer source (.gguf or HF dir) for exact token counts; default: "
        "the workers' model when it is a local path, else a learned bytes/token ratio",
    )
    g.add_argument("--link-gbps", type=float, help="P->D KV link bandwidth the cost model assumes" + _d("link_gbps"))
    g.add_argument("--max-sessions", type=int, help="session table bound (LRU)" + _d("max_sessions"))
    g.add_argument("--session-ttl-s", type=float, help="idle conversation expiry" + _d("session_ttl_s"))
    g = p.add_argument_group("worker management")
    g.add_argument(
        "--load-interval",
        dest="load_interval_s",
        type=float,
        help="seconds between load polls (/v1/loads, else /metrics)" + _d("load_interval_s"),
    )
    g.add_argument(
        "--request-timeout",
        dest="request_timeout_s",
        type=float,
        help="max seconds waiting for a worker's next bytes" + _d("request_timeout_s"),
    )
    g.add_argument(
        "--connect-timeout",
        dest="connect_timeout_s",
        type=float,
        help="worker connect timeout" + _d("connect_timeout_s"),
    )
    g.add_argument(
        "--max-retries", type=int, help="re-dispatches on a new pair before any byte was sent" + _d("max_retries")
    )
    g.add_argument(
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        help="on SIGTERM, seconds in-flight streams get to finish" + _d("drain_timeout_s"),
    )
    g.add_argument("--max-header-bytes", type=int, help="largest request header line" + _d("max_header_bytes"))
    g.add_argument(
        "--max-queue-per-worker",
        type=int,
        help="requests in flight per worker before 429 + Retry-After (0 = no bound)" + _d("max_queue_per_worker"),
    )
    g.add_argument(
        "--first-byte-timeout",
        dest="first_byte_timeout_s",
        type=float,
        help="retry a stream elsewhere when its worker is silent this long (0 = off)" + _d("first_byte_timeout_s"),
    )
    g.add_argument(
        "--header-timeout",
        dest="header_timeout_s",
        type=float,
        help="streamed requests: seconds to wait for a worker's response headers before retrying the turn on "
        "another pair (0 = off: --request-timeout bounds it). Set it above the time your workers take to "
        "start a stream: SGLang answers its headers at once, ppd-worker with the first token" + _d("header_timeout_s"),
    )
    g.add_argument(
        "--breaker-cooldown",
        dest="breaker_cooldown_s",
        type=float,
        help="a worker whose request failed stays out this long, doubling per failure" + _d("breaker_cooldown_s"),
    )
    g.add_argument(
        "--breaker-max-cooldown",
        dest="breaker_max_cooldown_s",
        type=float,
        help="cap of that cooldown" + _d("breaker_max_cooldown_s"),
    )
    g.add_argument(
        "--retry-after",
        dest="retry_after_s",
        type=int,
        help="Retry-After seconds on 429/503 answers" + _d("retry_after_s"),
    )
    g = p.add_argument_group("embedded cluster")
    g.add_argument("--embedded", help="layout: 1P1D, 1P2D, 2P2D, 1R (unified)..." + _d("embedded"))
    g.add_argument("--model", help="ppd-worker model: smollm2, a .gguf/HF path, or synthetic[:SEED]" + _d("model"))
    g.add_argument(
        "--backend", choices=BACKENDS, help="ppd = ppd-worker processes; sglang = real SGLang (GPU)" + _d("backend")
    )
    g.add_argument("--model-path", help="model for --backend sglang")
    g.add_argument("--tp", type=int, help="tensor parallel size per SGLang worker" + _d("tp"))
    g.add_argument("--worker-threads", type=int, help="torch threads per ppd-worker" + _d("worker_threads"))
    g.add_argument("--kv-link-gbps", type=float, help="cap the embedded P->D KV transfer rate (emulate a DC link)")
    g.add_argument(
        "--device",
        help="ppd-worker device(s): cpu, cuda, cuda:N, or a list cuda:0,cuda:1 "
        "(workers are placed round-robin over it)" + _d("device"),
    )
    g.add_argument(
        "--gpu-memory-fraction",
        type=float,
        help="share of its GPU each ppd-worker may use (e.g. 0.45 for a 1P1D pair on one GPU)",
    )
    g.add_argument(
        "--decode-rows-tokens",
        type=int,
        help="passed to each ppd-worker: on CPU, most tokens of decoding KV kept a second time in "
        "contiguous per-sequence rows (0 = off; default: the worker's, its --max-total-tokens)",
    )
    g.add_argument(
        "--startup-timeout",
        dest="startup_timeout_s",
        type=float,
        help="seconds to wait for workers" + _d("startup_timeout_s"),
    )
    g.add_argument("--dry-run", action="store_true", default=None, help="print the worker commands and exit")
    g.add_argument("--log-level", help="debug|info|warning|error" + _d("log_level"))
    return p


def _flags(ns: argparse.Namespace) -> dict[str, Any]:
    flags = {k: v for k, v in vars(ns).items() if k != "config"}
    if flags.get("prefill"):
        for item in flags["prefill"]:
            if len(item) > 2:
                raise ConfigError("prefill", f"expected URL [BOOTSTRAP_PORT], got {' '.join(item)!r}")
            if len(item) == 2 and not (item[1].isdigit() or item[1] == "none"):
                raise ConfigError("prefill", f"bootstrap port must be a number or 'none', got {item[1]!r}")
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "profile":
        from ppd_server.profile_cli import profile_main

        return profile_main(args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    ns = build_parser().parse_args(args)
    try:
        config = load_config(_flags(ns), yaml_path=ns.config)
    except ConfigError as e:
        print(f"ppd-server: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(config)


def serve(config: RouterConfig) -> int:
    from ppd_server.fleet.launcher import Cluster, ClusterError, plan_cluster, with_workers
    from ppd_server.http.app import create_app

    plans = [] if config.has_external_workers else plan_cluster(config)
    if config.dry_run:
        for plan in plans:
            print(" ".join(plan.argv))
        if not plans:
            print("ppd-server: external workers given; nothing to launch")
        return 0
    default_profile = None
    if plans:
        config = with_workers(config, plans)
        if config.model == "smollm2":  # the engine's own measured profile beats generic defaults
            from ppd_server.profiling import DEFAULT_PROFILE

            default_profile = DEFAULT_PROFILE
    try:  # before any process starts: a bad profile or tokenizer fails fast and cleanly
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        app = create_app(config, default_profile=default_profile)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"ppd-server: error: {e}", file=sys.stderr)
        return 2
    cluster = Cluster(plans) if plans else None
    # SIGTERM while the workers load must still run the finally below (stop them by PID);
    # serve() installs its own draining handler once serving.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if cluster is not None:
            cluster.start(timeout_s=config.startup_timeout_s)
        _run_app(app, config, loop)
    except ClusterError as e:
        print(f"ppd-server: error: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run_app(app, config: RouterConfig, loop: asyncio.AbstractEventLoop) -> None:
    from ppd_server.http.serve import serve

    print(
        f"[ppd-server] serving on http://{config.host}:{config.port} (policy {config.policy})",
        file=sys.stderr,
        flush=True,
    )
    # SIGTERM drains in-flight streams (drain_timeout_s) before the app and its cluster stop.
    serve(
        app,
        config.host,
        config.port,
        loop,
        drain_timeout_s=config.drain_timeout_s,
        max_header_bytes=config.max_header_bytes,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
