"""The session table: conversation id -> where its KV lives (decode worker, prefill worker), how
many tokens each holds, its turn count and last use.

Bounded so memory does not grow with traffic: at most ``max_sessions`` entries (least recently
used evicted first) and entries idle for more than ``idle_ttl_s`` are dropped (lazily, from the
LRU end, on every write - amortised O(1)). Every method takes ``now`` (seconds, any monotonic
clock): no hidden clock, so tests and the simulator drive time.

Contract with the router app and the simulator::

    st.admit(hints, prompt_tokens, max_new_tokens, now) -> (RequestView, SessionView | None)
                                              # a new request: fork placement, turn, what the policy sees
    st.turn_for(cid, explicit_turn, now)      # the turn number of a new request
    st.start_fork(child, parent, now)         # before routing a fork's first turn
    st.view(cid, now)  -> SessionView | None  # what the policy sees
    st.record(cid, decision, prompt_tokens, cached_tokens, completion_tokens, now)  # turn done
    st.forget_worker(url)                     # a worker died: its sessions lose their placement
    len(st), st.snapshot(limit)               # admin API

Tenants: with several API keys the router passes ``tenant`` (the key's id, never the key) to
every call, and an entry is keyed by (tenant, conversation id): the same id sent with another
key is another conversation, so one tenant can neither read nor steer another's placement.
``tenant=None`` (one key or none, the simulator) keys by the id alone.

What a worker holds after a turn: the decode (or unified) worker caches prompt + completion
(SGLang's decode radix cache inserts both when a request finishes); a prefill worker caches the
prompt it prefilled. A D-local turn leaves the prefill worker's (older) prefix untouched.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

from ppd_sdk.wire import Hints
from ppd_server.routing.frozen import constructor
from ppd_server.routing.types import Decision, RequestView, SessionView

# built on every request (routing.frozen.constructor: RequestView(...)/SessionView(...), faster)
_new_request_view = constructor(RequestView)
_new_session_view = constructor(SessionView)


@dataclass(slots=True)
class _Entry:
    decode_url: str | None
    prefill_url: str | None
    cached_tokens_decode: int
    cached_tokens_prefill: int
    turns: int
    last_used: float
    forked_from: str | None = None
    last_route: str | None = None
    last_reported_cached: int = 0  # what the worker said it found cached on the last turn
    last_output_tokens: int = 0  # the last turn's answer length (the policy's guess of the next one's)


_Key: TypeAlias = "str | tuple[str, str]"


def _key(conversation_id: str, tenant: str | None) -> _Key:
    return conversation_id if tenant is None else (tenant, conversation_id)


def _session_view(conversation_id: str, e: _Entry) -> SessionView:
    """A live entry as the policy sees it."""
    return _new_session_view(
        conversation_id,
        e.decode_url,
        e.prefill_url,
        e.cached_tokens_decode,
        e.cached_tokens_prefill,
        e.turns,
        e.forked_from,
        e.last_output_tokens,
    )


class SessionTable:
    def __init__(self, max_sessions: int = 100_000, idle_ttl_s: float = 3600.0) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not idle_ttl_s > 0:
            raise ValueError(f"idle_ttl_s must be > 0, got {idle_ttl_s}")
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()  # oldest use first
        self.evicted_lru = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, conversation_id: str | None, now: float, tenant: str | None = None) -> _Entry | None:
        if conversation_id is None:
            return None
        key = conversation_id if tenant is None else (tenant, conversation_id)  # _key
        e = self._entries.get(key)
        if e is None:
            return None
        if now - e.last_used > self.idle_ttl_s:
            del self._entries[key]
            self.expired += 1
            return None
        return e

    def _put(self, conversation_id: str, entry: _Entry, now: float, tenant: str | None = None) -> None:
        key = conversation_id if tenant is None else (tenant, conversation_id)  # _key
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        ttl = self.idle_ttl_s
        while entries:
            oldest_id = next(iter(entries))
            if now - entries[oldest_id].last_used > ttl:
                del entries[oldest_id]
                self.expired += 1
            elif len(entries) > self.max_sessions:
                del entries[oldest_id]
                self.evicted_lru += 1
            else:
                break

    def view(self, conversation_id: str | None, now: float, tenant: str | None = None) -> SessionView | None:
        """The session as the policy sees it, or None (unknown, expired or no id). Read-only:
        it does not refresh the session's last use (only a completed turn does)."""
        e = self._live(conversation_id, now, tenant)
        if e is None or conversation_id is None:
            return None
        return _session_view(conversation_id, e)

    def admit(
        self, hints: Hints, prompt_tokens: int, max_new_tokens: int, now: float, tenant: str | None = None
    ) -> tuple[RequestView, SessionView | None]:
        """A new request, as the policy will see it: a fork's first turn is placed on its parent's
        workers, the turn number is the client's or inferred, and the hints' weights and SLO pass
        through as they are. The one hints -> RequestView step, shared by the router
        (``TurnRouter.begin``) and the simulator."""
        conv = hints.conversation_id
        session = None
        turn = hints.turn or 1
        if conv is not None and hints.parent_conversation_id is None and hints.turn is not None and hints.turn >= 1:
            # the usual case (the simulator's every turn): no fork, the client's turn number; the
            # one lookup turn_for and view would each make
            e = self._live(conv, now, tenant)
            if e is not None:
                session = _session_view(conv, e)
        elif conv is not None:
            if hints.parent_conversation_id is not None and self._live(conv, now, tenant) is None:
                self.start_fork(conv, hints.parent_conversation_id, now, tenant)
            turn = self.turn_for(conv, hints.turn, now, tenant)
            session = self.view(conv, now, tenant)
        request = _new_request_view(
            conv, turn, prompt_tokens, max_new_tokens, hints.weights, hints.slo, hints.parent_conversation_id
        )
        return request, session

    def turn_for(
        self, conversation_id: str | None, explicit_turn: int | None, now: float, tenant: str | None = None
    ) -> int:
        """The client's turn number when it sent one, else completed turns + 1 (1 when unknown)."""
        if explicit_turn is not None:
            if explicit_turn < 1:
                raise ValueError(f"turn must be >= 1, got {explicit_turn}")
            return explicit_turn
        e = self._live(conversation_id, now, tenant)
        return 1 if e is None else e.turns + 1

    def start_fork(self, child_id: str, parent_id: str, now: float, tenant: str | None = None) -> SessionView | None:
        """Place a new conversation that extends ``parent_id``'s prefix on the parent's workers,
        with the parent's cached tokens. No-op (returns the child's view) when the child already
        has turns of its own; returns None when the parent is unknown."""
        if child_id == parent_id:
            raise ValueError("a conversation cannot fork itself")
        child = self._live(child_id, now, tenant)
        if child is not None and child.turns > 0:
            return self.view(child_id, now, tenant)
        parent = self._live(parent_id, now, tenant)
        if parent is None:
            return None
        entry = _Entry(
            parent.decode_url,
            parent.prefill_url,
            parent.cached_tokens_decode,
            parent.cached_tokens_prefill,
            0,
            now,
            parent_id,
        )
        self._put(child_id, entry, now, tenant)
        return self.view(child_id, now, tenant)

    def record(
        self,
        conversation_id: str | None,
        decision: Decision,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
        now: float,
        tenant: str | None = None,
    ) -> None:
        """A turn of ``conversation_id`` completed on ``decision``'s workers (no-op without an id)."""
        if conversation_id is None:
            return
        if prompt_tokens < 0:  # max(x, 0), written out (once per turn)
            prompt_tokens = 0
        if completion_tokens < 0:
            completion_tokens = 0
        e = self._live(conversation_id, now, tenant)
        if e is None:
            e = _Entry(None, None, 0, 0, 0, now)
        e.decode_url = decision.decode
        e.cached_tokens_decode = prompt_tokens + completion_tokens
        if decision.route == "pd":
            e.prefill_url = decision.prefill
            e.cached_tokens_prefill = prompt_tokens
        elif decision.route == "replica":
            e.prefill_url, e.cached_tokens_prefill = None, 0
        e.turns += 1
        e.last_used = now
        e.last_route = decision.route
        e.last_reported_cached = cached_tokens if cached_tokens > 0 else 0
        e.last_output_tokens = completion_tokens
        self._put(conversation_id, e, now, tenant)

    def forget_worker(self, url: str) -> int:
        """A worker died or was removed: sessions placed on it lose that placement (their next
        turn goes P->D and re-binds). Returns how many sessions were touched. O(sessions)."""
        touched = 0
        for e in self._entries.values():
            hit = False
            if e.decode_url == url:
                e.decode_url, e.cached_tokens_decode, hit = None, 0, True
            if e.prefill_url == url:
                e.prefill_url, e.cached_tokens_prefill, hit = None, 0, True
            touched += hit
        return touched

    def snapshot(self, limit: int = 100) -> list[dict[str, Any]]:
        """The ``limit`` most recently used sessions, newest first (for the admin API); ``tenant``
        is the API key's id (None with one key or none)."""
        out: list[dict[str, Any]] = []
        for key in reversed(self._entries):
            if len(out) >= max(limit, 0):
                break
            tenant, cid = key if isinstance(key, tuple) else (None, key)
            out.append({"conversation_id": cid, "tenant": tenant, **asdict(self._entries[key])})
        return out
