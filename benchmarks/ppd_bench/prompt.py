"""Synthetic prompt text of a requested token count.

A benchmark must send real text (the server tokenizes and templates it) of a known size without
shipping a tokenizer for every model. Common English nouns preceded by a space are one token in
the BPE vocabularies of SmolLM2, Llama, Qwen and GPT-2 alike, so ``n`` words are ~``n`` tokens;
the real count is read back from the response's ``usage``. Words are drawn from a per-(seed,
session, turn) RNG, so two sessions never share a prefix beyond the chat template (no accidental
cross-session cache hits) and a run is reproducible.
"""

from __future__ import annotations

import random
import zlib

WORDS: tuple[str, ...] = tuple(
    """time year people way day man thing woman life child world school state family student group country
    problem hand part place case week company system program question work government number night point home
    water room mother area money story fact month lot right study book eye job word business issue side kind
    head house service friend father power hour game line end member law car city community name president team
    minute idea kid body information back parent face others level office door health person art war history
    party result change morning reason research girl guy moment air teacher force education foot boy age policy
    music market sense nation plan college interest death experience effect use class control care field
    development role effort rate heart drug show leader light voice wife police mind price report decision son
    view relationship town road arm difference value building action model season society tax director position
    player record paper space ground form event official matter center couple site project activity star table
    need court oil situation cost industry figure street image phase picture garden river bridge stone tree bird
    window train letter color summer winter island valley forest ocean chair clock apple bread glass metal silver
    gold cloud storm""".split()  # noqa: SIM905 - a word list reads better as text
)


def prompt_text(n_tokens: int, seed: int, session: str, turn: int) -> str:
    """About ``n_tokens`` tokens of words, a function of (seed, session, turn)."""
    rng = random.Random(zlib.crc32(f"{seed}/{session}/{turn}".encode()))
    return " ".join(rng.choices(WORDS, k=max(1, n_tokens)))
