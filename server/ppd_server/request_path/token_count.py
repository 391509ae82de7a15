"""Prompt token counts for routing: exact from the model's tokenizer and chat template when the
router can load them, otherwise estimated from a bytes-per-token ratio (plus a per-chat
overhead: templates add system prompts and markers) learned online.

Contract with the router app::

    tc = TokenCounter.from_source(path_or_none)   # .gguf / HF dir / "synthetic[:SEED]" or None
    tc.count_chat(messages, tools) ; tc.count_text(text) ; tc.exact
    tc.observe(prompt_bytes, reported_prompt_tokens)   # after each turn, from the worker's usage

``prompt_bytes`` must be measured the way the estimate is: :meth:`TokenCounter.chat_bytes` for
chat requests, ``len(text.encode())`` for text prompts. The estimate is
``tokens = overhead + bytes / bytes_per_token``, fitted by recursive least squares with slow
forgetting (it follows a change of language or template) from a weak prior (no overhead, 4
bytes/token); plain text prompts use the ratio alone. Reports implying fewer than 0.5 or more
than 32 bytes per token are ignored as nonsense.

The tokenizer comes from ``ppd_kernels.tokenizer.load_tokenizer`` (imported lazily; that module
chain does not import torch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ppd_server.routing.rls import RecursiveLeastSquares

DEFAULT_BYTES_PER_TOKEN = 4.0  # English BPE text; refined online
_RATIO_BOUNDS = (1.0, 16.0)  # what the estimate may use
_SANE_REPORT = (0.5, 32.0)  # bytes/token of a report worth learning from
_FORGET = 0.995
_MESSAGE_OVERHEAD_BYTES = 12  # role markers and separators a chat template adds per message


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def apply_chat_template(
        self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True
    ) -> str: ...


def _text_of(content: Any) -> str:
    """A message's text: a string, or OpenAI content parts (text parts joined; others skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def _plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    out = []
    for m in messages:
        d = dict(m)
        d["content"] = _text_of(m.get("content"))
        out.append(d)
    return out


class _TwoParameterRLS(RecursiveLeastSquares):
    """:class:`RecursiveLeastSquares` with its update unrolled for the counter's two parameters
    (overhead, tokens per kbyte): the same arithmetic, in the same order, without the generic
    k x k loops (which cost more than the rest of a routed turn's bookkeeping: it runs per turn)."""

    def update(self, x: Sequence[float], y: float, weight: float = 1.0) -> float:
        x0, x1 = x
        (p00, p01), (p10, p11) = self._p
        px0 = p00 * x0 + p01 * x1
        px1 = p10 * x0 + p11 * x1
        t0, t1 = self.theta
        residual = y - (t0 * x0 + t1 * x1)
        if not weight > 0:
            return residual
        lam = self._lam
        denom = lam / weight + (x0 * px0 + x1 * px1)
        if denom <= 0:
            return residual
        g0, g1 = px0 / denom, px1 / denom
        self.theta = [t0 + g0 * residual, t1 + g1 * residual]
        n00, n01 = (p00 - g0 * px0) / lam, (p01 - g0 * px1) / lam
        n10, n11 = (p10 - g1 * px0) / lam, (p11 - g1 * px1) / lam
        d0, d1 = self._prior_diag
        if n00 > d0:  # cap each variance at the prior's, rescaling its row and column
            scale = (d0 / n00) ** 0.5
            n00, n01, n10 = n00 * scale * scale, n01 * scale, n10 * scale
        if n11 > d1:
            scale = (d1 / n11) ** 0.5
            n10, n11, n01 = n10 * scale, n11 * scale * scale, n01 * scale
        self._p = [[n00, n01], [n10, n11]]
        self.samples += 1
        return residual


class TokenCounter:
    def __init__(self, tokenizer: _Tokenizer | None = None, bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN) -> None:
        lo, hi = _RATIO_BOUNDS
        if not lo <= bytes_per_token <= hi:
            raise ValueError(f"bytes_per_token must be in [{lo}, {hi}], got {bytes_per_token}")
        self._tokenizer = tokenizer
        self.observations = 0
        # tokens = overhead + (bytes / 1000) * tokens_per_kbyte
        self._fit = _TwoParameterRLS(
            [0.0, 1000.0 / bytes_per_token], [64.0, 1000.0 / bytes_per_token], noise_std=4.0, lam=_FORGET
        )

    @classmethod
    def from_source(cls, source: str | None) -> TokenCounter:
        """A counter with the tokenizer at ``source`` (exact), or the learned ratio when None.
        A source that cannot be loaded raises ValueError naming it."""
        if source is None:
            return cls()
        try:
            from ppd_kernels.tokenizer import load_tokenizer
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise ValueError(f"cannot load tokenizer {source!r}: ppd_kernels.tokenizer unavailable ({e})") from None
        try:
            tok = load_tokenizer(source)
        except Exception as e:  # the loader's own errors vary (file, format, template)
            raise ValueError(f"cannot load tokenizer from {source!r}: {e}") from None
        return cls(tok)

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    @staticmethod
    def chat_bytes(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """The byte measure the learned ratio applies to: message texts, roles, tool calls and
        tool definitions, plus a fixed per-message overhead for the template's markers."""
        total = 0
        for m in messages:
            total += len(_text_of(m.get("content")).encode()) + len(str(m.get("role", ""))) + _MESSAGE_OVERHEAD_BYTES
            if m.get("tool_calls"):
                total += len(json.dumps(m["tool_calls"], separators=(",", ":")).encode())
        if tools:
            total += len(json.dumps(list(tools), separators=(",", ":")).encode())
        return total

    @property
    def bytes_per_token(self) -> float:
        lo, hi = _RATIO_BOUNDS
        per_kbyte = self._fit.theta[1]
        return hi if per_kbyte <= 1000.0 / hi else min(hi, max(lo, 1000.0 / per_kbyte))

    @property
    def chat_overhead_tokens(self) -> float:
        """Learned tokens a chat template adds beyond the message bytes (>= 0)."""
        return max(0.0, self._fit.theta[0])

    def count_text(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text))
        return self._estimate(len(text.encode()))

    def count_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        n_bytes: int | None = None,
    ) -> int:
        """Prompt tokens of a chat request as the worker will see them (with the generation prompt).
        ``n_bytes``: its :meth:`chat_bytes`, when the caller has it already."""
        if self._tokenizer is not None:
            rendered = self._tokenizer.apply_chat_template(
                _plain_messages(messages), tools=[dict(t) for t in tools] if tools else None, add_generation_prompt=True
            )
            return len(self._tokenizer.encode(rendered))
        if n_bytes is None:
            n_bytes = self.chat_bytes(messages, tools)
        return self._estimate(n_bytes, self.chat_overhead_tokens)

    def _estimate(self, n_bytes: int, overhead: float = 0.0) -> int:
        if n_bytes <= 0:
            return 0
        return max(1, round(overhead + n_bytes / self.bytes_per_token))

    def observe(self, prompt_bytes: int, reported_prompt_tokens: int) -> None:
        """Learn from a worker's reported prompt_tokens (ignored when exact or absurd)."""
        if self._tokenizer is not None or prompt_bytes <= 0 or reported_prompt_tokens <= 0:
            return
        lo, hi = _SANE_REPORT
        if not lo <= prompt_bytes / reported_prompt_tokens <= hi:
            return
        self._fit.update((1.0, prompt_bytes / 1000.0), float(reported_prompt_tokens))
        self.observations += 1
