"""Simulated traffic: multi-turn conversations, generated from a seed or read from a JSONL trace.

A workload is a tuple of :class:`Conversation` built *before* a run, so every policy compared in
one ``ppd-sim`` invocation sees exactly the same conversations, arrival times, token counts and
think times. Conversations start as a Poisson process at ``qps`` (new conversations per second);
turn k+1 is sent ``think_ms[k]`` after turn k's answer ends (closed loop per conversation).

Presets follow the PPD paper's synthetic workloads (routing-anchors.md 1.5): turn 1 is "small"
128->128 or "large" 1024->1024; turns 2+ use one class (``mid_bal`` = 128 new input tokens, 128
output tokens, ...). ``mixed`` draws one class per conversation.

Trace format (JSONL): one conversation per line, a list of ``[input_tokens, output_tokens]``
pairs, one pair per turn; ``input_tokens`` are the turn's *new* tokens (the prompt is the whole
history plus them). Arrivals still come from ``qps``; trace conversations are used in order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

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
WORKLOAD_NAMES: tuple[str, ...] = (*TURN_CLASSES, "mixed")

MAX_TURN_TOKENS = 131_072  # per turn, input or output: beyond this a config is surely a mistake
MAX_TURNS = 64


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str
    arrival_ms: float  # when turn 1 is sent
    turns: tuple[tuple[int, int], ...]  # (new input tokens, output tokens) per turn
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
class WorkloadSpec:
    qps: float  # new conversations per second (Poisson)
    duration_s: float  # conversations start within [0, duration)
    workload: str = "mid_bal"  # a WORKLOAD_NAMES entry (ignored with a trace)
    first_turn: str = "small"
    turns_min: int = 4
    turns_max: int = 4
    think_s: float = 1.0  # mean think time (exponential)
    jitter: float = 0.25  # token counts drawn uniformly within +-jitter of the class
    seed: int = 0

    def validate(self) -> None:
        if not 0 < self.qps <= 1000:
            raise ValueError(f"--qps must be in (0, 1000] conversations/s, got {self.qps}")
        if not 0 < self.duration_s <= 3600:
            raise ValueError(f"--duration must be in (0, 3600] seconds, got {self.duration_s}")
        if self.qps * self.duration_s > 100_000:
            raise ValueError(f"--qps {self.qps} x --duration {self.duration_s} is {self.qps * self.duration_s:.0f} conversations; the limit is 100000")
        if self.workload not in WORKLOAD_NAMES:
            raise ValueError(f"unknown --workload {self.workload!r}; choose one of {', '.join(WORKLOAD_NAMES)}")
        if self.first_turn not in FIRST_TURN_CLASSES:
            raise ValueError(f"unknown --first-turn {self.first_turn!r}; choose one of {', '.join(FIRST_TURN_CLASSES)}")
        if not 1 <= self.turns_min <= self.turns_max <= MAX_TURNS:
            raise ValueError(f"--turns must be within 1..{MAX_TURNS} (min <= max), got {self.turns_min}..{self.turns_max}")
        if not 0 <= self.think_s <= 600:
            raise ValueError(f"--think-s must be in [0, 600], got {self.think_s}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"--jitter must be in [0, 1), got {self.jitter}")


def _jittered(rng: random.Random, n: int, jitter: float) -> int:
    return max(1, round(n * rng.uniform(1 - jitter, 1 + jitter))) if jitter > 0 else n


def _arrivals(rng: random.Random, qps: float, duration_s: float) -> list[float]:
    out, t = [], rng.expovariate(qps)
    while t < duration_s:
        out.append(t * 1000.0)
        t += rng.expovariate(qps)
    return out


def _think(rng: random.Random, mean_s: float, n: int) -> tuple[float, ...]:
    return tuple(rng.expovariate(1.0 / mean_s) * 1000.0 if mean_s > 0 else 0.0 for _ in range(n))


def synthetic(spec: WorkloadSpec) -> tuple[Conversation, ...]:
    """Seeded conversations: Poisson starts, preset token classes, exponential think times."""
    spec.validate()
    rng = random.Random(spec.seed)
    classes = list(TURN_CLASSES.values())
    first = FIRST_TURN_CLASSES[spec.first_turn]
    convs = []
    for k, arrival in enumerate(_arrivals(rng, spec.qps, spec.duration_s)):
        later = rng.choice(classes) if spec.workload == "mixed" else TURN_CLASSES[spec.workload]
        n_turns = rng.randint(spec.turns_min, spec.turns_max)
        turns = [(_jittered(rng, first[0], spec.jitter), _jittered(rng, first[1], spec.jitter))]
        turns += [(_jittered(rng, later[0], spec.jitter), _jittered(rng, later[1], spec.jitter)) for _ in range(n_turns - 1)]
        convs.append(Conversation(f"c{k}", arrival, tuple(turns), _think(rng, spec.think_s, n_turns - 1)))
    return tuple(convs)


def load_trace(path: str | Path, spec: WorkloadSpec) -> tuple[Conversation, ...]:
    """Conversations from a JSONL trace, started at ``spec.qps`` (Poisson) until the trace or the
    duration ends. Errors name the file, the line and the bad value."""
    spec.validate()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read trace {str(path)!r}: {e.strerror}") from None
    shapes: list[tuple[tuple[int, int], ...]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"trace {str(path)!r} line {lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e.msg}") from None
        shapes.append(_parse_turns(data, where))
    if not shapes:
        raise ValueError(f"trace {str(path)!r} has no conversations")
    rng = random.Random(spec.seed)
    arrivals = _arrivals(rng, spec.qps, spec.duration_s)[: len(shapes)]
    return tuple(
        Conversation(f"c{k}", t, shapes[k], _think(rng, spec.think_s, len(shapes[k]) - 1)) for k, t in enumerate(arrivals)
    )


def _parse_turns(data: object, where: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where}: expected a non-empty list of [input_tokens, output_tokens] pairs, got {data!r:.80}")
    if len(data) > MAX_TURNS:
        raise ValueError(f"{where}: {len(data)} turns; the limit is {MAX_TURNS}")
    turns = []
    for pair in data:
        ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        if not ok or not (1 <= pair[0] <= MAX_TURN_TOKENS and 1 <= pair[1] <= MAX_TURN_TOKENS):
            raise ValueError(f"{where}: bad turn {pair!r}; each turn is [input_tokens, output_tokens], integers in 1..{MAX_TURN_TOKENS}")
        turns.append((pair[0], pair[1]))
    return tuple(turns)
