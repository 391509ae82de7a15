"""When does a request stop, and what text has it produced so far.

``OutputTracker`` is fed one token at a time. It keeps the cumulative output text (holding
back a trailing incomplete UTF-8 character so streamed text never changes retroactively),
and returns SGLang's finish_reason when the request is done:
``{"type": "stop", "matched": <token id | stop string>}`` or ``{"type": "length", "length": N}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .sampling import SamplingParams

_REPLACEMENT = "\ufffd"


class OutputTracker:
    def __init__(
        self, params: SamplingParams, eos_ids: Iterable[int], decode: Callable[[list[int], bool], str]
    ) -> None:
        self.params = params
        self.eos_ids = frozenset(() if params.ignore_eos else eos_ids)
        self._decode = decode
        self.output_ids: list[int] = []
        self.text = ""
        self.finish_reason: dict[str, Any] | None = None
        self._longest_stop = max((len(s) for s in params.stop), default=0)

    def append(self, token: int) -> dict[str, Any] | None:
        """Record one generated token; returns the finish_reason once the request is done."""
        if self.finish_reason is not None:
            raise RuntimeError("append after finish")
        self.output_ids.append(token)
        previous_len = len(self.text)
        text = self._decode(self.output_ids, self.params.skip_special_tokens)
        self.text = text.rstrip(_REPLACEMENT) if text.endswith(_REPLACEMENT) else text
        if token in self.eos_ids or token in self.params.stop_token_ids:
            return self._finish({"type": "stop", "matched": token})
        if self.params.stop:
            hit = self._find_stop(max(0, previous_len - self._longest_stop))
            if hit is not None:
                return hit
        if len(self.output_ids) >= self.params.max_new_tokens:
            return self._finish({"type": "length", "length": len(self.output_ids)})
        return None

    def finish_now(self, reason: dict[str, Any]) -> dict[str, Any]:
        """Finish for an outside reason (abort, length limit reached before any token)."""
        return self._finish(reason)

    def _find_stop(self, search_from: int) -> dict[str, Any] | None:
        best: tuple[int, str] | None = None
        for stop in self.params.stop:
            index = self.text.find(stop, search_from)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, stop)
        if best is None:
            return None
        index, stop = best
        if not self.params.no_stop_trim:
            self.text = self.text[:index]
        return self._finish({"type": "stop", "matched": stop})

    def _finish(self, reason: dict[str, Any]) -> dict[str, Any]:
        self.finish_reason = reason
        return reason
