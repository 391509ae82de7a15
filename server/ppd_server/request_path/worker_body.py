"""The request body sent to the workers: the client's own bytes with the dispatcher's few fields
appended, when that is the same JSON object as re-serialising the parsed body would give.

Why: ``json.dumps`` of a parsed chat request (messages included) was the largest single cost of
a P->D dispatch (``benchmarks/router_overhead.py``); appending ``, "bootstrap_host": ...`` before
the client's closing brace costs a byte copy. The contract (:func:`worker_body`):

* ``raw`` is the client's body exactly as received, or None when the front door changed the
  parsed body (removed ``ppd``, forced ``stream_options.include_usage``): then the parsed body
  (with ``extra``) is serialised, as before.
* The bytes are reused only when they are plainly a UTF-8 JSON object (first byte ``{`` or JSON
  whitespace, last non-blank byte ``}``; json.loads also takes UTF-16/32 and a BOM, which start
  or end otherwise), the object is not empty, and none of ``extra``'s keys is in it already (a
  duplicate key would leave the winner to the worker's parser). Otherwise: re-serialised.

The worker then parses the same object as it would have from the re-serialised body (the client's
duplicate keys, number spellings and escapes reach it as the client wrote them; Python's parser,
as SGLang's, keeps the last of duplicate keys, as the router's own parse did).
"""

from __future__ import annotations

import json
from typing import Any

_OBJECT_START = (b"{", b" ", b"\n", b"\r", b"\t")


def worker_body(
    body: dict[str, Any], raw: bytes | None, extra: dict[str, Any] | None = None, members: bytes | None = None
) -> bytes:
    """The bytes to POST: ``body`` updated with ``extra`` (``extra``'s keys last, as ``dict(body, **extra)``).
    ``members``: ``extra`` already encoded as ``json.dumps(extra)`` writes its members
    (``"k": v, ...``), when the caller has them cheaper."""
    if raw is not None and body and raw[:1] in _OBJECT_START and not (extra and any(k in body for k in extra)):
        end = raw.rstrip()
        if end.endswith(b"}"):
            if not extra:
                return raw
            if members is None:
                members = json.dumps(extra).encode()[1:-1]
            return b"".join((end[:-1], b", ", members, b"}"))
    return json.dumps(dict(body, **extra) if extra else body).encode()


def members_prefix(extra: dict[str, Any]) -> bytes:
    """``extra``'s members as ``json.dumps`` writes them, followed by ``, "``: a prefix to which
    the caller appends the last member (``key": value``)."""
    return json.dumps(extra).encode()[1:-1] + b', "'
