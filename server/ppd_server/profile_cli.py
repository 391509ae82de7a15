"""``ppd-server profile``: measure an engine's step-time grid and save the fitted profile that
``ppd-server --profile`` and ``ppd-sim --profile`` load. ``ppd-server`` (``cli.main``) hands
``profile ...`` to :func:`profile_main`; bad flags are a one-line error naming them, exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ppd_server.config import DEFAULTS as _DEFAULTS
from ppd_server.config import ConfigError, RouterConfig
from ppd_server.config import default_hint as _d


def build_profile_parser() -> argparse.ArgumentParser:
    from ppd_server.profiling import GRIDS

    p = argparse.ArgumentParser(
        prog="ppd-server profile",
        description="Measure an engine's step-time grid over HTTP (prefill of n new tokens over c cached; decode "
        "batch x context; mixed iterations: a prefill chunk riding with b decode streams), fit the cost "
        "model's coefficients and save them as a profile JSON for `ppd-server --profile` and "
        "`ppd-sim --profile`. With no --worker, an embedded unified ppd-worker is started and stopped.",
        epilog="Grids (per-kind lists override them): "
        + "; ".join(
            f"{name}: prefill {list(g.prefill_lengths)}, decode batches {list(g.decode_batches)} x contexts "
            f"{list(g.decode_contexts)}, mixed batches {list(g.mixed_batches)}, repeats {g.repeats}"
            for name, g in GRIDS.items()
        ),
    )
    p.add_argument(
        "--worker",
        help="profile this running unified worker (ppd-worker, or SGLang with its radix cache) instead of starting one",
    )
    p.add_argument("--model", default=_DEFAULTS["model"], help="embedded ppd-worker model" + _d("model"))
    p.add_argument("--threads", type=int, default=1, help="torch threads for the embedded worker (default: 1)")
    p.add_argument(
        "--output", "-o", default="ppd-profile.json", help="where to save the profile (default: ppd-profile.json)"
    )
    p.add_argument("--grid", default="default", choices=sorted(GRIDS), help="what to measure (default: default)")
    for flag, what in (
        ("--prefill-lengths", "fresh prefill lengths"),
        ("--append-prefixes", "cached prefix lengths for appends"),
        ("--append-lengths", "append lengths over those prefixes"),
        ("--decode-batches", "decode batch sizes"),
        ("--decode-contexts", "decode context per stream"),
        ("--mixed-batches", "decode streams under a prefill"),
        ("--mixed-lengths", "prefill lengths riding with them"),
        ("--mixed-cached", "cached prefix of that prefill"),
    ):
        p.add_argument(flag, metavar="N,N", help=f"{what}, comma-separated (overrides the grid)")
    p.add_argument("--repeats", type=int, help="repeats of the prefill and mixed cells (overrides the grid)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=900.0,
        help="stop measuring after this long and fit what was measured (default: 900)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds (default: 120)")
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=_DEFAULTS["startup_timeout_s"],
        help="seconds to wait for the embedded worker" + _d("startup_timeout_s"),
    )
    p.add_argument("--seed", type=int, default=0, help="token sampling seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _profile_grid(ns: argparse.Namespace):  # -> ProfileGrid; ValueError names the bad flag
    from dataclasses import replace

    from ppd_server.profiling import GRIDS

    grid = GRIDS[ns.grid]
    changes: dict[str, Any] = {}
    for name in (
        "prefill_lengths",
        "append_prefixes",
        "append_lengths",
        "decode_batches",
        "decode_contexts",
        "mixed_batches",
        "mixed_lengths",
        "mixed_cached",
    ):
        text = getattr(ns, name)
        if text is None:
            continue
        try:
            changes[name] = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--{name.replace('_', '-')} must be comma-separated integers, got {text!r}") from None
        if not changes[name]:
            raise ValueError(f"--{name.replace('_', '-')} names no value")
    if ns.repeats is not None:
        changes["repeats"] = ns.repeats
    try:
        return replace(grid, **changes).validate()
    except ValueError as e:
        raise ValueError(f"bad grid: {e}") from None


def profile_main(argv: Sequence[str]) -> int:
    import math
    import time

    from ppd_server.fleet.launcher import Cluster, ClusterError, plan_cluster
    from ppd_server.profiling import ProfileError, measure_profile, save_profile

    ns = build_profile_parser().parse_args(list(argv))
    try:
        grid = _profile_grid(ns)
        for flag, v in (
            ("--max-seconds", ns.max_seconds),
            ("--timeout", ns.timeout),
            ("--startup-timeout", ns.startup_timeout),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{flag} must be > 0, got {v}")
        if ns.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {ns.threads}")
        if ns.worker is not None and not ns.worker.startswith(("http://", "https://")):
            raise ValueError(f"--worker must be an http(s) URL, got {ns.worker!r}")
    except ValueError as e:
        print(f"ppd-server profile: error: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(done: int, total: int, label: str) -> None:
        if not ns.quiet:
            print(
                f"[ppd-server profile] {done}/{total} {label} ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

    cluster = None
    url = ns.worker
    try:
        if url is None:
            cfg = RouterConfig(
                embedded="1R", model=ns.model, worker_threads=ns.threads, startup_timeout_s=ns.startup_timeout
            ).validate()
            plans = plan_cluster(cfg)
            cluster = Cluster(plans)
            cluster.start(timeout_s=ns.startup_timeout)
            url = plans[0].url
        profile = measure_profile(
            url, grid, timeout_s=ns.timeout, seed=ns.seed, max_seconds=ns.max_seconds, progress=progress
        )
        save_profile(profile, ns.output)
    except ConfigError as e:
        print(f"ppd-server profile: error: {e}", file=sys.stderr)
        return 2
    except (ClusterError, ProfileError, OSError) as e:
        print(f"ppd-server profile: error: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps({"coefficients": profile["coefficients"], "fit": profile["fit"]}, indent=2))
    note = f", {profile['skipped']} cell(s) skipped at --max-seconds" if profile.get("skipped") else ""
    print(
        f"[ppd-server] profile saved to {ns.output} ({len(profile['samples'])} samples in "
        f"{profile['measure_seconds']:.0f}s{note})",
        file=sys.stderr,
    )
    return 0
