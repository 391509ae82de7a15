"""``ppd-worker``: command line built from EngineConfig (SGLang flag names), then serve.

Examples::

    ppd-worker --model smollm2 --port 30000                                   # unified
    ppd-worker --disaggregation-mode prefill --port 30001 --disaggregation-bootstrap-port 8998
    ppd-worker --disaggregation-mode decode --port 30002 \\
        --disaggregation-decode-enable-radix-cache --disaggregation-decode-enable-conditional-agg
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import typing

from .config import ConfigError, EngineConfig

_ALIASES = {"model": ["--model-path"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-worker",
        description="PPD embedded inference worker speaking SGLang's worker protocol.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(EngineConfig)
    for f in dataclasses.fields(EngineConfig):
        flags = [f"--{f.name.replace('_', '-')}", *_ALIASES.get(f.name, [])]
        kind = hints[f.name]
        meta = dict(f.metadata)
        if kind is bool:
            parser.add_argument(
                *flags, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"]
            )
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        parser.add_argument(
            *flags, dest=f.name, type=base, default=f.default, help=meta["help"], choices=meta.get("choices")
        )
    return parser


def parse_config(argv: list[str] | None = None) -> EngineConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return EngineConfig(**vars(args)).validate()
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    from .model_source import ModelSourceError

    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available() or (
            torch.device(config.device).index is not None
            and torch.device(config.device).index >= torch.cuda.device_count()
        ):
            print(
                f"ppd-worker: error: --device {config.device}: no such CUDA device "
                f"({torch.cuda.device_count()} visible)",
                file=sys.stderr,
            )
            sys.exit(2)

    try:
        asyncio.run(serve(config))
    except ModelSourceError as exc:
        print(f"ppd-worker: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"ppd-worker: error: {exc}", file=sys.stderr)
        sys.exit(1)


async def serve(config: EngineConfig) -> None:
    from aiohttp import web

    from .http_api import create_app
    from .worker import build_worker

    loop = asyncio.get_running_loop()
    print(f"ppd-worker: loading {config.model} ({config.disaggregation_mode} mode) ...", file=sys.stderr, flush=True)
    worker = await loop.run_in_executor(None, build_worker, config)
    runner = web.AppRunner(create_app(worker), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    extra = f", KV bootstrap on {config.host}:{worker.bootstrap.port}" if worker.bootstrap else ""
    print(
        f"ppd-worker: serving {worker.served_model_name} ({worker.dtype}) on http://{config.host}:{config.port}{extra}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announce = asyncio.ensure_future(_announce_ready(worker))
    try:
        await stop.wait()
    finally:
        announce.cancel()
        print("ppd-worker: shutting down", file=sys.stderr, flush=True)
        await runner.cleanup()


async def _announce_ready(worker) -> None:
    await worker.ready.wait()
    if worker.warmup_ms is not None:
        print(f"ppd-worker: warmed up in {worker.warmup_ms:.0f} ms; /health is 200", file=sys.stderr, flush=True)
