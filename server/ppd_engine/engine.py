"""Engine: the one thread that owns the scheduler and the model, and its bridge to asyncio.

The HTTP side never touches scheduler state: it posts commands (``submit``, ``abort``,
``kv_received``, ``release_sent``, ``flush_cache``) to the engine's inbox; the engine thread
runs them between steps and reports progress back on the event loop through each request's
``RequestHandle`` (an asyncio queue of ``Update`` snapshots).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .request import Req, State
from .scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Update:
    """A snapshot of a request's output after a step (cumulative, SGLang style)."""

    output_ids: list[int]
    text: str
    finish_reason: dict[str, Any] | None
    kind: str = "token"  # "token" | "need_kv" (decode: pages ready) | "prefilled" (prefill: KV ready)


@dataclass(eq=False)
class RequestHandle:
    req: Req
    loop: asyncio.AbstractEventLoop
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)

    def push_threadsafe(self, update: Update) -> None:
        self.loop.call_soon_threadsafe(self.updates.put_nowait, update)


class Engine:
    def __init__(self, scheduler: Scheduler, runner: Any, observer: Any = None) -> None:
        """``runner`` has ``run(step) -> tokens`` and ``release(req)``; ``observer`` (metrics)
        gets ``on_step``, ``on_token`` and ``on_finish`` calls from the engine thread."""
        self.scheduler = scheduler
        self.runner = runner
        self.observer = observer
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._handles: dict[str, RequestHandle] = {}
        self._calls: set[asyncio.Future] = set()  # ``call`` futures not answered yet
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.last_step_time = 0.0
        self.error: BaseException | None = None

    # ---- called from the event loop ---------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ppd-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._inbox.put(lambda: None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, handle: RequestHandle) -> None:
        # Registered before the engine thread sees it, and checked after, so a request that
        # races with the engine's death is still failed (the thread fails every handle).
        self._handles[handle.req.rid] = handle
        self._inbox.put(lambda: self._add(handle))
        if self.error is not None:
            self._fail(handle)

    def abort(self, req: Req, reason: str = "client disconnected") -> None:
        self._inbox.put(lambda: self._abort(req, reason))

    def kv_received(self, req: Req, first_token: int) -> None:
        """Decode: the prompt KV was written into the request's slots."""
        self._inbox.put(lambda: self._kv_received(req, first_token))

    def release_sent(self, req: Req) -> None:
        """Prefill: the KV was shipped (or the transfer failed); free the request."""
        self._inbox.put(lambda: self._finish(req))

    def call(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` on the engine thread (between steps) and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.add(future)
        future.add_done_callback(self._calls.discard)
        if self.error is not None:
            future.set_exception(RuntimeError(f"the engine failed: {self.error}"))
            return future

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:  # reported to the awaiting coroutine
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

        self._inbox.put(run)
        return future

    # ---- engine thread ----------------------------------------------------------------
    def _loop(self) -> None:
        try:
            idle = True
            while not self._stopping.is_set():
                # Block for commands when the last step computed nothing: every state change
                # that could make work runnable (new request, KV arrival, release) is a command.
                self._drain_inbox(block=idle)
                if self._stopping.is_set():
                    break
                idle = not self._step()
        except BaseException as exc:  # the worker reports itself unhealthy
            log.exception("engine thread died")
            self.error = exc
            for handle in list(self._handles.values()):
                self._fail(handle)
            for future in list(self._calls):
                future.get_loop().call_soon_threadsafe(
                    _set_exception, future, RuntimeError(f"the engine failed: {exc}")
                )

    def _fail(self, handle: RequestHandle) -> None:
        """End a request because the engine thread died (its commands will never run)."""
        handle.req.error = f"engine failure: {self.error}"
        self._push(handle.req, kind="token", final=True)

    def _drain_inbox(self, block: bool) -> None:
        try:
            command = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        command()
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            command()

    def _step(self) -> bool:
        """Schedule and run one step; False if there was nothing to compute."""
        step = self.scheduler.schedule()
        for req in step.admitted_awaiting_kv:
            self._push(req, kind="need_kv")
        if not step.rows:
            return bool(step.admitted_awaiting_kv)
        started = time.perf_counter()
        tokens = self.runner.run(step)
        produced = self.scheduler.on_forward_done(step, tokens)
        self.last_step_time = time.perf_counter() - started
        if self.observer is not None:
            self.observer.on_step(step, self.last_step_time)
        for req in produced:
            self._on_produced(req)
        return True

    def _on_produced(self, req: Req) -> None:
        now = time.monotonic()
        if req.first_token_time is None:
            req.first_token_time = now
        elif self.observer is not None and req.last_token_time is not None:
            self.observer.on_token(req, now - req.last_token_time)
        req.last_token_time = now
        if req.state is State.SENDING:
            self._push(req, kind="prefilled")
        elif req.finished:
            self._released(req)
        else:
            self._push(req, kind="token")

    def _add(self, handle: RequestHandle) -> None:
        req = handle.req
        try:
            self.scheduler.add(req)
        except ValueError as exc:
            req.error = str(exc)
            req.tracker.finish_now({"type": "abort", "message": str(exc)})
            req.state = State.FINISHED
            self._released(req)

    def _abort(self, req: Req, reason: str) -> None:
        if req.finished or req.rid not in self._handles:
            return
        self.scheduler.abort(req, {"type": "abort", "message": reason})
        self._released(req)

    def _kv_received(self, req: Req, first_token: int) -> None:
        if self.scheduler.on_kv_received(req, first_token):
            self._on_produced(req)

    def _finish(self, req: Req) -> None:
        if req.rid in self._handles:
            self.scheduler.finish(req)
            self._released(req)

    def _released(self, req: Req) -> None:
        self.runner.release(req)
        if self.observer is not None:
            self.observer.on_finish(req)
        self._push(req, kind="token", final=True)
        self._handles.pop(req.rid, None)

    def _push(self, req: Req, kind: str, final: bool = False) -> None:
        handle = self._handles.get(req.rid)
        if handle is None:
            return
        tracker = req.tracker
        reason = tracker.finish_reason if final or kind == "token" else None
        if final and reason is None:
            reason = {"type": "abort", "message": req.error or "aborted"}
        handle.push_threadsafe(Update(list(tracker.output_ids), tracker.text, reason, kind))


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
