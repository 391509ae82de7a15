"""Multi-turn workloads: the ONE format that ``ppd-bench`` (live) and ``ppd-sim`` (simulated) share.

A workload is a list of sessions (conversations). Each session is its turns' *new* input tokens
(the prompt is the whole history plus them), output tokens, and think times (the pause after a
turn's answer ends before the next turn is sent). Sessions start as a Poisson process at a rate
of new sessions per second, unless the file records its own arrival times (a recorded trace).

File format (JSONL, one session per line)::

    {"id": "s0", "turns": [{"input_tokens": 1500, "output_tokens": 32},
                           {"input_tokens": 48, "output_tokens": 32, "think_ms": 410.0}, ...],
     "arrival_ms": 0.0}

``think_ms`` of turn k >= 2 is the pause before it (turn 1's is ignored; absent = drawn from the
run's mean think time); ``id`` and ``arrival_ms`` are optional (``arrival_ms`` on every line =
replay those arrivals instead of Poisson ones). The older format, one list of
``[input_tokens, output_tokens]`` pairs per line, still loads. Reading and writing the files is
``workload_file.py``; this module is the data types, the generators and the arrival schedule.

Built-in generators (:data:`GENERATORS`; ``WORKLOAD_NAMES`` lists every name):

* the PPD paper's classes (``mid_bal``, ``big_paste``, ..., ``mixed``): turn 1 from ``first_turn``
  (128->128 or 1024->1024), turns 2+ one class; shaped by :class:`WorkloadSpec` (turns, think, jitter);
* ``long-context`` (the paper's long-context case: ~10k-token first turn, 100-token answers,
  5 turns), ``chat`` (ShareGPT-like lognormal lengths, 2-12 turns), ``agent`` (8-16 turns,
  tool-sized appends, short think times); each has a ``-cpu`` variant scaled for the embedded CPU
  cluster (SmolLM2-135M, one core per worker). These own their turn counts and think times.
  ``long-prompt-cpu`` puts most of a session's work in its first turn (~2k tokens, then 3 short
  appends): at a fraction of a session per second it keeps the CPU cluster's prefill worker busy
  while its decode worker can still absorb the appends (the live comparison of benchmarks/REPORT.md).

Everything is a function of a seed: every policy compared in one run, and the simulator
replaying a benchmark's workload, see the same sessions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: turn 2+ classes of the PPD paper: name -> (new input tokens, output tokens)
TURN_CLASSES: dict[str, tuple[int, int]] = {
    "tiny": (16, 32),
    "short_gen": (32, 256),
    "long_gen": (32, 512),
    "very_long_gen": (64, 1024),
    "small_bal": (64, 64),
    "mid_bal": (128, 128),
    "mid_paste": (256, 64),
    "big_paste": (512, 64),
    "huge_paste": (1024, 32),
}
#: turn 1 classes: name -> (input tokens, output tokens)
FIRST_TURN_CLASSES: dict[str, tuple[int, int]] = {"small": (128, 128), "large": (1024, 1024)}

MAX_TURN_TOKENS = 131_072  # per turn, input or output: beyond this a config is surely a mistake
MAX_TURNS = 64
MAX_SESSIONS = 100_000

Turns = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    """A scheduled session: when it starts, its turns, and its think times."""

    conversation_id: str
    arrival_ms: float  # when turn 1 is sent
    turns: Turns  # (new input tokens, output tokens) per turn
    think_ms: tuple[float, ...]  # pause after turn k's answer before turn k+1 (len = turns - 1)

    def prompt_tokens(self, turn_index: int) -> int:
        """Whole prompt of turn ``turn_index`` (0-based): every earlier input and output, plus its input."""
        history = sum(i + o for i, o in self.turns[:turn_index])
        return history + self.turns[turn_index][0]

    @property
    def peak_tokens(self) -> int:
        """KV slots the last turn needs (prompt + output): the largest any turn of it needs."""
        return sum(i + o for i, o in self.turns)


@dataclass(frozen=True, slots=True)
class Session:
    """One line of a workload file: a session's shape, not yet scheduled. ``think_ms`` is None
    when the file leaves think times to the run; ``arrival_ms`` is None unless recorded."""

    session_id: str
    turns: Turns
    think_ms: tuple[float, ...] | None = None
    arrival_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        turns: list[dict[str, Any]] = []
        for k, (i, o) in enumerate(self.turns):
            t: dict[str, Any] = {"input_tokens": i, "output_tokens": o}
            if k and self.think_ms is not None:
                t["think_ms"] = round(self.think_ms[k - 1], 3)
            turns.append(t)
        out: dict[str, Any] = {"id": self.session_id, "turns": turns}
        if self.arrival_ms is not None:
            out["arrival_ms"] = round(self.arrival_ms, 3)
        return out


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    qps: float  # new conversations per second (Poisson)
    duration_s: float  # conversations start within [0, duration)
    workload: str = "mid_bal"  # a WORKLOAD_NAMES entry (ignored with a trace)
    first_turn: str = "small"  # paper classes only
    turns_min: int = 4  # paper classes only
    turns_max: int = 4  # paper classes only
    think_s: float = 1.0  # mean think time (exponential); paper classes and files without think times
    jitter: float = 0.25  # paper classes: token counts drawn uniformly within +-jitter of the class
    seed: int = 0

    def validate(self) -> None:
        if not (math.isfinite(self.qps) and 0 < self.qps <= 1000):
            raise ValueError(f"--qps must be in (0, 1000] conversations/s, got {self.qps}")
        if not (math.isfinite(self.duration_s) and 0 < self.duration_s <= 3600):
            raise ValueError(f"--duration must be in (0, 3600] seconds, got {self.duration_s}")
        if self.qps * self.duration_s > MAX_SESSIONS:
            raise ValueError(
                f"--qps {self.qps} x --duration {self.duration_s} is {self.qps * self.duration_s:.0f} conversations; "
                f"the limit is {MAX_SESSIONS}"
            )
        check_name(self.workload, "--workload")
        if self.first_turn not in FIRST_TURN_CLASSES:
            raise ValueError(f"unknown --first-turn {self.first_turn!r}; choose one of {', '.join(FIRST_TURN_CLASSES)}")
        if not 1 <= self.turns_min <= self.turns_max <= MAX_TURNS:
            raise ValueError(
                f"--turns must be within 1..{MAX_TURNS} (min <= max), got {self.turns_min}..{self.turns_max}"
            )
        if not (math.isfinite(self.think_s) and 0 <= self.think_s <= 600):
            raise ValueError(f"--think-s must be in [0, 600], got {self.think_s}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"--jitter must be in [0, 1), got {self.jitter}")


# -- generators ---------------------------------------------------------------------------------

#: draws one session's (turns, think_ms) from the RNG; the spec shapes the paper classes only
DrawFn = Callable[[random.Random, WorkloadSpec], tuple[Turns, tuple[float, ...]]]


@dataclass(frozen=True, slots=True)
class Generator:
    name: str
    description: str
    draw: DrawFn


def _jittered(rng: random.Random, n: int, jitter: float) -> int:
    return max(1, round(n * rng.uniform(1 - jitter, 1 + jitter))) if jitter > 0 else n


def _think(rng: random.Random, mean_s: float, n: int) -> tuple[float, ...]:
    return tuple(rng.expovariate(1.0 / mean_s) * 1000.0 if mean_s > 0 else 0.0 for _ in range(n))


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma)))))


def _paper(name: str) -> DrawFn:
    # Draw order is the simulator's historical one (class, turn count, tokens, think): a seed gives
    # the same conversations as before the format was shared.
    def draw(rng: random.Random, spec: WorkloadSpec) -> tuple[Turns, tuple[float, ...]]:
        later = rng.choice(list(TURN_CLASSES.values())) if name == "mixed" else TURN_CLASSES[name]
        first = FIRST_TURN_CLASSES[spec.first_turn]
        n = rng.randint(spec.turns_min, spec.turns_max)
        turns = [(_jittered(rng, first[0], spec.jitter), _jittered(rng, first[1], spec.jitter))]
        turns += [(_jittered(rng, later[0], spec.jitter), _jittered(rng, later[1], spec.jitter)) for _ in range(n - 1)]
        return tuple(turns), _think(rng, spec.think_s, n - 1)

    return draw


def _long_context(first: int, follow: int, answer: int, think_s: float, n: int = 5) -> DrawFn:
    def draw(rng: random.Random, spec: WorkloadSpec) -> tuple[Turns, tuple[float, ...]]:
        turns = [(_jittered(rng, first, 0.1), answer)] + [(_jittered(rng, follow, 0.25), answer) for _ in range(n - 1)]
        return tuple(turns), _think(rng, think_s, n - 1)

    return draw


def _chat(in_median: float, out_median: float, in_max: int, out_max: int, max_turns: int, think_s: float) -> DrawFn:
    # ShareGPT-like: heavy-tailed (lognormal) user and answer lengths, geometric turn counts.
    def draw(rng: random.Random, spec: WorkloadSpec) -> tuple[Turns, tuple[float, ...]]:
        n = 2
        while n < max_turns and rng.random() < 0.6:
            n += 1
        turns = tuple(
            (_lognormal(rng, in_median, 1.0, 4, in_max), _lognormal(rng, out_median, 0.7, 4, out_max)) for _ in range(n)
        )
        return turns, _think(rng, think_s, n - 1)

    return draw


def _agent(task: int, append_median: float, append_max: int, out_median: float, out_max: int, think_s: float) -> DrawFn:
    # A tool-using agent: a long task prompt, then tool results appended, short tool-call answers,
    # and the think time is the tool's run time.
    def draw(rng: random.Random, spec: WorkloadSpec) -> tuple[Turns, tuple[float, ...]]:
        n = rng.randint(8, 16)
        turns = [(_jittered(rng, task, 0.25), _lognormal(rng, out_median, 0.5, 4, out_max))]
        turns += [
            (_lognormal(rng, append_median, 0.6, 8, append_max), _lognormal(rng, out_median, 0.5, 4, out_max))
            for _ in range(n - 1)
        ]
        return tuple(turns), _think(rng, think_s, n - 1)

    return draw


def _registry() -> dict[str, Generator]:
    gens = [
        Generator(name, f"paper class: turn 1 --first-turn, turns 2+ {i} new -> {o} out", _paper(name))
        for name, (i, o) in TURN_CLASSES.items()
    ]
    gens.append(Generator("mixed", "paper classes: one turn 2+ class drawn per session", _paper("mixed")))
    gens += [
        Generator(
            "long-context",
            "~10k-token first turn, ~128-token follow-ups, 100-token answers, 5 turns, think 1 s",
            _long_context(10_000, 128, 100, 1.0),
        ),
        Generator(
            "long-context-cpu",
            "CPU scale: ~1.5k-token first turn, ~48-token follow-ups, 32-token answers, 5 turns, think 0.5 s",
            _long_context(1_500, 48, 32, 0.5),
        ),
        Generator(
            "long-prompt-cpu",
            "CPU scale, most work in turn 1 (a busy prefill worker at low rates): ~2k-token first turn, ~24-token "
            "follow-ups, 32-token answers, 4 turns, think 1 s",
            _long_context(2_000, 24, 32, 1.0, n=4),
        ),
        Generator(
            "chat",
            "ShareGPT-like: lognormal inputs (median 80) and answers (median 200), 2-12 turns, think 3 s",
            _chat(80, 200, 4096, 2048, 12, 3.0),
        ),
        Generator(
            "chat-cpu",
            "CPU scale: inputs median 40, answers median 24 (max 96), 2-6 turns, think 0.5 s",
            _chat(40, 24, 512, 96, 6, 0.5),
        ),
        Generator(
            "agent",
            "8-16 turns: ~2k-token task, tool results median 250, tool-call answers median 60, think 0.2 s",
            _agent(2_000, 250, 2_000, 60, 300, 0.2),
        ),
        Generator(
            "agent-cpu",
            "CPU scale: 8-16 turns, ~400-token task, tool results median 48, answers median 16, think 0.1 s",
            _agent(400, 48, 160, 16, 48, 0.1),
        ),
    ]
    return {g.name: g for g in gens}


GENERATORS: dict[str, Generator] = _registry()
WORKLOAD_NAMES: tuple[str, ...] = tuple(GENERATORS)


def check_name(name: str, option: str = "workload") -> None:
    if name not in GENERATORS:
        raise ValueError(f"unknown {option} {name!r}; choose one of {', '.join(WORKLOAD_NAMES)}")


def generate_sessions(name: str, count: int, seed: int = 0, spec: WorkloadSpec | None = None) -> list[Session]:
    """``count`` sessions of the named generator (no arrival times: the run assigns them)."""
    check_name(name)
    if not 1 <= count <= MAX_SESSIONS:
        raise ValueError(f"session count must be in 1..{MAX_SESSIONS}, got {count}")
    spec = spec or WorkloadSpec(qps=1.0, duration_s=1.0, workload=name, seed=seed)
    rng = random.Random(seed)
    out = []
    for k in range(count):
        turns, think = GENERATORS[name].draw(rng, spec)
        out.append(Session(f"s{k}", turns, think))
    return out


# -- scheduling ---------------------------------------------------------------------------------


def poisson_arrivals(
    rng: random.Random, rate: float, duration_s: float | None = None, count: int | None = None
) -> list[float]:
    """Poisson start times in ms, at ``rate`` per second, until ``duration_s`` or ``count``."""
    out: list[float] = []
    t = rng.expovariate(rate)
    while (duration_s is None or t < duration_s) and (count is None or len(out) < count):
        out.append(t * 1000.0)
        t += rng.expovariate(rate)
    return out


def schedule(
    sessions: Sequence[Session],
    rate: float,
    seed: int = 0,
    *,
    duration_s: float | None = None,
    count: int | None = None,
    think_s: float = 1.0,
    start_at_zero: bool = False,
) -> tuple[Conversation, ...]:
    """Sessions with start times: their recorded ``arrival_ms`` when every one has it, else
    Poisson at ``rate`` new sessions/s (seeded), used in order, until ``duration_s`` or ``count``
    or the sessions run out (``start_at_zero``: shifted so the first starts at 0, as a bounded
    benchmark wants). Missing think times are exponential with mean ``think_s``."""
    if not sessions:
        return ()
    limit = min(len(sessions), count) if count is not None else len(sessions)
    rng = random.Random(seed)
    if all(s.arrival_ms is not None for s in sessions):
        ordered = sorted(sessions[:limit], key=lambda s: s.arrival_ms or 0.0)
        arrivals = [s.arrival_ms or 0.0 for s in ordered]
        if duration_s is not None:
            ordered = [s for s, a in zip(ordered, arrivals) if a < duration_s * 1000.0]
            arrivals = arrivals[: len(ordered)]
    else:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the session rate must be a positive number of sessions/s, got {rate}")
        # All arrivals within the duration are drawn before any think time (the simulator's
        # historical draw order), then cut to the sessions available.
        arrivals = poisson_arrivals(rng, rate, duration_s, None if duration_s is not None else limit)[:limit]
        if start_at_zero and arrivals:
            arrivals = [a - arrivals[0] for a in arrivals]
        ordered = list(sessions[: len(arrivals)])
    return tuple(
        Conversation(
            s.session_id, a, s.turns, s.think_ms if s.think_ms is not None else _think(rng, think_s, len(s.turns) - 1)
        )
        for s, a in zip(ordered, arrivals)
    )


def synthetic(spec: WorkloadSpec) -> tuple[Conversation, ...]:
    """Seeded conversations of a named generator: Poisson starts at ``spec.qps`` within
    ``spec.duration_s``; ids ``c0, c1, ...``."""
    spec.validate()
    rng = random.Random(spec.seed)
    draw = GENERATORS[spec.workload].draw
    convs = []
    for k, arrival in enumerate(poisson_arrivals(rng, spec.qps, spec.duration_s)):
        turns, think = draw(rng, spec)
        convs.append(Conversation(f"c{k}", arrival, turns, think))
    return tuple(convs)
