"""Drive an OpenAI-compatible endpoint with multi-turn sessions, open loop.

Sessions start at their scheduled times (Poisson at ``rate`` new sessions/s, or a trace's own
arrivals) whatever the server's state: an overloaded server sees its queue grow, it does not slow
the arrivals down. Within a session each turn is sent when the previous answer has ended plus
that turn's think time, and carries the whole history (the answers actually received) plus
synthetic text of the requested size, streamed, with ``max_tokens`` = the requested output and
``ignore_eos`` (an extra body field that SGLang and the embedded engine honour) so every system
generates the same number of tokens.

Every turn carries the PPD hints folded by :meth:`ppd_sdk.wire.Hints.apply` (the SDK owns the
vocabulary): the conversation id (``X-PPD-Conversation-Id`` and ``prompt_cache_key``), the turn
number and the SLO targets as headers, the weights as the ``ppd`` body field (unless
``body_hints`` is off). The
routing decision comes back from the ``ppd`` field of the final chunk or the ``X-PPD-*``
headers; cached tokens from ``usage.prompt_tokens_details.cached_tokens``.

The first session starts at once (Poisson gaps after it). Bounds: at most ``sessions`` sessions
start, all within ``duration_s``; the whole run ends by
``deadline_s`` (turns still running then are cancelled and count as failed).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ppd_bench.prompt import prompt_text
from ppd_bench.stats import TurnRecord, summarize
from ppd_bench.turn import send_turn
from ppd_sim.workload import Conversation, Session, schedule

RESULT_VERSION = 1


class BenchError(ValueError):
    """A bad option or an unusable endpoint; the message names the value."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    url: str
    rate: float = 1.0  # new sessions per second (Poisson)
    sessions: int = 20  # at most this many sessions start
    duration_s: float = 60.0  # sessions start within this window
    deadline_s: float | None = None  # the whole run ends by then (default: duration + 120 s)
    model: str | None = None  # default: the first model the endpoint lists
    seed: int = 0
    think_s: float = 1.0  # mean think time for workloads that do not carry theirs
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    w_ttft: float = 1.0
    w_tpot: float = 1.0
    body_hints: bool = True  # also send the hints as the `ppd` body field (headers always)
    ignore_eos: bool = True
    request_timeout_s: float = 300.0
    label: str = ""
    api_key: str | None = None
    progress: bool = True

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BenchError(f"bad --url {self.url!r}; expected http://host:port")
        _positive("--rate", self.rate, 10_000)
        _positive("--duration", self.duration_s, 86_400)
        if self.deadline_s is not None:
            _positive("--deadline", self.deadline_s, 86_400)
        _positive("--request-timeout", self.request_timeout_s, 86_400)
        if not 1 <= self.sessions <= 100_000:
            raise BenchError(f"--sessions must be in 1..100000, got {self.sessions}")
        if not (math.isfinite(self.think_s) and 0 <= self.think_s <= 3600):
            raise BenchError(f"--think-s must be in [0, 3600], got {self.think_s}")
        for name, v in (("--slo-ttft-ms", self.slo_ttft_ms), ("--slo-tpot-ms", self.slo_tpot_ms)):
            if v is not None:
                _positive(name, v, 3.6e6)
        for name, v in (("--w-ttft", self.w_ttft), ("--w-tpot", self.w_tpot)):
            if not (math.isfinite(v) and 0 <= v <= 1000):
                raise BenchError(f"{name} must be in [0, 1000], got {v}")

    @property
    def deadline(self) -> float:
        return self.deadline_s if self.deadline_s is not None else self.duration_s + 120.0


def _positive(name: str, value: float, hi: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= hi):
        raise BenchError(f"{name} must be a positive number (at most {hi:g}), got {value}")


def api_base(url: str) -> str:
    """``http://h:p`` or ``http://h:p/v1`` -> ``http://h:p/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class _Progress:
    """A progress bar on stderr (tqdm), counting finished turns, with the failures and the
    local share so far."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self._bar: Any = None
        self._ok = self._failed = self._local = 0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit="turn",
                desc=label or "ppd-bench",
                file=sys.stderr,
                mininterval=0.5,
                dynamic_ncols=True,
            )

    def update(self, r: TurnRecord) -> None:
        self._ok += r.ok
        self._failed += not r.ok
        self._local += r.route == "local"
        if self._bar is not None:
            self._bar.set_postfix(ok=self._ok, failed=self._failed, local=self._local, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Runner:
    def __init__(
        self,
        config: RunConfig,
        client: httpx.AsyncClient,
        model: str,
        run_id: str,
        on_record: Callable[[TurnRecord], None],
    ) -> None:
        self.config, self.client, self.model, self.run_id = config, client, model, run_id
        self.on_record = on_record
        self.records: list[TurnRecord] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _add(self, r: TurnRecord) -> None:
        self.records.append(r)
        self.on_record(r)

    async def session(self, conv: Conversation) -> None:
        cfg = self.config
        cid = f"{self.run_id}-{conv.conversation_id}"
        messages: list[dict[str, Any]] = []
        k = 0
        sent = self.now()
        try:
            await asyncio.sleep(max(0.0, conv.arrival_ms / 1000.0 - self.now()))
            for k, (n_in, n_out) in enumerate(conv.turns):
                if k:
                    await asyncio.sleep(conv.think_ms[k - 1] / 1000.0)
                messages.append({"role": "user", "content": prompt_text(n_in, cfg.seed, conv.conversation_id, k + 1)})
                sent = self.now()
                record, answer = await self.turn(cid, conv.conversation_id, k + 1, messages, n_in, n_out)
                self._add(record)
                if not record.ok:
                    break
                messages.append({"role": "assistant", "content": answer})
            else:
                return
            reason = f"not sent: turn {k + 1} failed"
            k += 1
        except asyncio.CancelledError:
            reason = "run deadline"
        now = self.now()
        for j in range(k, len(conv.turns)):
            n_in, n_out = conv.turns[j]
            # a turn cut in flight keeps its send time; turns never sent are stamped now
            at = sent if j == k and reason == "run deadline" and len(messages) > 2 * j else now
            self._add(
                TurnRecord(conv.conversation_id, j + 1, round(at, 4), round(now, 4), False, n_in, n_out, error=reason)
            )

    async def turn(
        self, cid: str, session: str, turn: int, messages: list[dict[str, Any]], n_in: int, n_out: int
    ) -> tuple[TurnRecord, str]:
        return await send_turn(
            self.client, self.model, self.config, self.now, cid, session, turn, messages, n_in, n_out
        )


async def discover_model(client: httpx.AsyncClient, url: str) -> str:
    """The first model the endpoint lists; a clear error when it cannot be reached."""
    try:
        r = await client.get("/models", timeout=10.0)
    except httpx.HTTPError as e:
        raise BenchError(f"cannot reach --url {url!r}: {type(e).__name__} {e}".rstrip()) from None
    if r.status_code != 200:
        raise BenchError(f"--url {url!r}: GET /v1/models answered HTTP {r.status_code}; pass --model")
    try:
        data = r.json().get("data") or []
        return str(data[0]["id"])
    except (ValueError, AttributeError, LookupError, TypeError):
        raise BenchError(f"--url {url!r}: GET /v1/models lists no model; pass --model") from None


async def arun(
    config: RunConfig,
    sessions: Sequence[Session],
    workload: str = "",
    on_record: Callable[[TurnRecord], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the result document (see :func:`run`)."""
    config.validate()
    convs = schedule(
        sessions,
        config.rate,
        config.seed,
        duration_s=config.duration_s,
        count=config.sessions,
        think_s=config.think_s,
        start_at_zero=True,
    )
    if not convs:
        raise BenchError(
            f"no session starts within --duration {config.duration_s:g}s at --rate {config.rate:g}/s; raise either"
        )
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(config.request_timeout_s, connect=10.0)
    async with httpx.AsyncClient(
        base_url=api_base(config.url), headers=headers, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        model = config.model or await discover_model(client, config.url)
        if config.model:
            try:
                await client.get("/models", timeout=10.0)
            except httpx.HTTPError as e:
                raise BenchError(f"cannot reach --url {config.url!r}: {type(e).__name__} {e}".rstrip()) from None
        total_turns = sum(len(c.turns) for c in convs)
        progress = _Progress(total_turns, config.label, config.progress)
        run_id = f"b{int(time.time() * 1000) % 10**10:x}"

        def record(r: TurnRecord) -> None:
            progress.update(r)
            if on_record is not None:
                on_record(r)

        runner = _Runner(config, client, model, run_id, record)
        runner.t0 = time.perf_counter()
        tasks = [asyncio.create_task(runner.session(c)) for c in convs]
        _, pending = await asyncio.wait(tasks, timeout=config.deadline)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        wall = runner.now()
        progress.close()
    records = sorted(runner.records, key=lambda r: (r.sent_s, r.session, r.turn))
    return _result(config, model, workload, convs, records, wall, bool(pending))


def _result(
    config: RunConfig,
    model: str,
    workload: str,
    convs: Sequence[Conversation],
    records: list[TurnRecord],
    wall: float,
    hit_deadline: bool,
) -> dict[str, Any]:
    n_turns = sum(len(c.turns) for c in convs)
    window = max(c.arrival_ms for c in convs) / 1000.0 if convs else 0.0
    cfg = {k: v for k, v in asdict(config).items() if k not in ("api_key", "progress")}
    cfg["deadline_s"] = config.deadline
    return {
        "ppd_bench": RESULT_VERSION,
        "label": config.label,
        "url": config.url,
        "model": model,
        "workload": workload,
        "config": cfg,
        "load": {
            "sessions": len(convs),
            "turns": n_turns,
            "sessions_per_s": config.rate,
            "mean_turns_per_session": round(n_turns / len(convs), 3),
            "offered_requests_per_s": round(config.rate * n_turns / len(convs), 3),
            "arrival_window_s": round(window, 3),
            "measured_requests_per_s": round(len(records) / wall, 3) if wall > 0 else None,
        },
        "wall_s": round(wall, 3),
        "hit_deadline": hit_deadline,
        "summary": summarize(records, wall, config.slo_ttft_ms, config.slo_tpot_ms),
        "sessions": [Session(c.conversation_id, c.turns, c.think_ms, c.arrival_ms).to_json() for c in convs],
        "records": [r.to_json() for r in records],
    }


def sessions_from_result(result: dict[str, Any]) -> list[Session]:
    """The sessions a result ran, with their arrival and think times (``write_sessions`` makes
    them a workload file that ``ppd-sim --trace`` replays)."""
    return [
        Session(
            s["id"],
            tuple((t["input_tokens"], t["output_tokens"]) for t in s["turns"]),
            tuple(t.get("think_ms", 0.0) for t in s["turns"][1:]),
            s.get("arrival_ms"),
        )
        for s in result["sessions"]
    ]


def run(
    config: RunConfig,
    sessions: Sequence[Session],
    workload: str = "",
    on_record: Callable[[TurnRecord], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark against ``config.url`` and return the result document: ``config``,
    ``load`` (new sessions/s and the resulting requests/s), ``summary`` per turn class
    (:func:`ppd_bench.stats.summarize`), the exact ``sessions`` run (with arrivals: a workload
    file ``ppd-sim --trace`` replays) and one ``records`` entry per turn."""
    return asyncio.run(arun(config, sessions, workload, on_record))
