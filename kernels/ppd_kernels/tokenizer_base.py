"""The ``Tokenizer`` of a loaded model: encode/decode text and render chats (torch-free).

Built by ``tokenizer_sources`` (one builder per source kind) and returned by
``ppd_kernels.tokenizer.load_tokenizer``; this module imports neither, so the three form
no import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ppd_kernels.chat_template import ChatTemplate

if TYPE_CHECKING:
    import tokenizers


class Tokenizer:
    """encode/decode text and render chats.

    eos_token_ids: every id that ends a generation; bos_token_id: None if the model has none;
    special_tokens: {text: id} of the control tokens (matched whole in ``encode`` input).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token_id: int | None,
        eos_token_ids: Iterable[int],
        chat_template: str | None,
        special_tokens: Mapping[str, int],
    ) -> None:
        self._backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids = frozenset(eos_token_ids)
        if not self.eos_token_ids:
            raise ValueError("a tokenizer needs at least one end-of-sequence token")
        self.special_tokens = dict(special_tokens)
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        by_id = {i: t for t, i in self.special_tokens.items()}
        bos_text = by_id.get(bos_token_id, "") if bos_token_id is not None else ""
        self._template = ChatTemplate(
            chat_template, bos_token=bos_text, eos_token=by_id.get(min(self.eos_token_ids), "")
        )

    @property
    def chat_template(self) -> str:
        return self._template.source

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (e.g. to save it as tokenizer.json)."""
        return self._backend

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS/EOS added. Special-token texts map to their ids."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """Prompt text for ``messages`` (OpenAI chat format, incl. ``tool_calls`` and role
        ``tool``); see ``ppd_kernels.chat_template`` for how tools are rendered."""
        return self._template.render(messages, tools, add_generation_prompt)
