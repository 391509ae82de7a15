"""KV transfer between a prefill and a decode worker over plain TCP (asyncio streams).

Protocol (each JSON frame = 4-byte big-endian length + UTF-8 JSON):

1. decode connects to the prefill's bootstrap server (bootstrap_host:bootstrap_port) and
   sends ``{"room": R, "decode_prefix_len": N, "host": T, "pid": P}`` (N = tokens the decode
   already caches, so only the suffix is sent: SGLang's incremental transfer; T = its
   same-host token, see ``kv_handoff``, and P its process id; absent = bytes over TCP only);
2. prefill waits until its prefill of room R is done, then sends
   ``{"ok": true, "first_token": id, "start": N, "num_tokens": n, "prefill_cached_tokens": c,
   "dtype": "bfloat16", "shape": [...], "nbytes": B}`` followed by B raw bytes: the
   ``KVPool.read`` tensor of positions [N, n) — or, when T equals its own token, the same
   header plus ``"handoff": {...}`` (a shared-memory segment or a CUDA IPC handle) and no
   bytes — or ``{"ok": false, "error": msg}``;
3. decode answers ``{"ok": true}`` once it has stored the KV; prefill then frees the request
   (and the handoff segment).

The prefill side caps its send rate when ``link_gbps`` is set (a datacenter link on loopback).
Both sides time out after ``timeout`` seconds with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 20
_CHUNK = 1 << 20


class TransferError(RuntimeError):
    pass


async def write_frame(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    payload = json.dumps(obj).encode()
    writer.write(_HEADER.pack(len(payload)) + payload)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > _MAX_FRAME:
        raise TransferError(f"frame of {size} bytes is too large")
    obj = json.loads(await reader.readexactly(size))
    if not isinstance(obj, dict):
        raise TransferError("frame is not a JSON object")
    return obj


@dataclass
class PrefillResult:
    """What the prefill side ships for a room (``read_kv(start, end)`` returns the tensor)."""

    first_token: int
    num_tokens: int
    prefill_cached_tokens: int
    read_kv: Callable[[int, int], Any]


@dataclass(eq=False)
class _Room:
    ready: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    created: float = field(default_factory=time.monotonic)


class BootstrapServer:
    """Prefill side: serves decode workers that come for the KV of a room."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        link_gbps: float | None = None,
        on_sent: Callable[[int, float], None] | None = None,
        same_host: bool = True,
    ) -> None:
        self.host, self.port, self.timeout, self.link_gbps = host, port, timeout, link_gbps
        self.on_sent = on_sent
        # Hand KV over through shared memory / CUDA IPC to a decode on this host (a link cap
        # emulates a network, so it forces TCP).
        self.same_host = same_host and link_gbps is None
        self._rooms: dict[int, _Room] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for room in self._rooms.values():
            for future in (room.ready, room.done):
                if not future.done():
                    future.set_exception(TransferError("prefill worker shutting down"))
                    future.exception()  # mark retrieved
        self._rooms.clear()

    def _room(self, room_id: int) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room()
        return room

    async def send(self, room_id: int, result: PrefillResult) -> int:
        """Publish the prefill of ``room_id`` and wait until a decode worker took it.
        Returns the KV bytes sent; raises TransferError on timeout or a failed transfer."""
        room = self._room(room_id)
        if not room.ready.done():
            room.ready.set_result(result)
        try:
            return await asyncio.wait_for(asyncio.shield(room.done), self.timeout)
        except asyncio.TimeoutError:
            raise TransferError(
                f"no decode worker fetched the KV of bootstrap_room {room_id} within {self.timeout:g} s"
            ) from None
        finally:
            self._rooms.pop(room_id, None)

    def cancel(self, room_id: int, reason: str) -> None:
        room = self._rooms.pop(room_id, None)
        if room is not None and not room.ready.done():
            room.ready.set_exception(TransferError(reason))
            room.ready.exception()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        room: _Room | None = None
        room_id: int | None = None
        release: Callable[[], None] | None = None
        try:
            request = await asyncio.wait_for(read_frame(reader), self.timeout)
            room_id, start = request.get("room"), request.get("decode_prefix_len", 0)
            if not isinstance(room_id, int) or not isinstance(start, int) or start < 0:
                raise TransferError(f"bad bootstrap request {request!r}")
            room = self._room(room_id)
            result: PrefillResult = await asyncio.wait_for(asyncio.shield(room.ready), self.timeout)
            start = min(start, result.num_tokens)
            began = time.monotonic()
            handoff = self.same_host and request.get("host") == _host_token()

            def prepare():
                data = result.read_kv(start, result.num_tokens)
                # CUDA IPC cannot map a handle in the process that made it (the warmup
                # fetches from itself): same-process CUDA fetches take TCP.
                same_process = request.get("pid") == os.getpid()
                if handoff and data.numel() and not (data.device.type == "cuda" and same_process):
                    from .kv_handoff import publish

                    return data, *publish(data)
                return data, None, None

            data, descriptor, release = await asyncio.get_running_loop().run_in_executor(None, prepare)
            raw = (
                memoryview(b"")
                if descriptor is not None
                else memoryview(await asyncio.get_running_loop().run_in_executor(None, _host_bytes, data))
            )
            nbytes = data.numel() * data.element_size()
            header = {
                "ok": True,
                "first_token": result.first_token,
                "start": start,
                "num_tokens": result.num_tokens,
                "prefill_cached_tokens": result.prefill_cached_tokens,
                "dtype": str(data.dtype).removeprefix("torch."),
                "shape": list(data.shape),
                "nbytes": nbytes,
            }
            if descriptor is not None:
                header["handoff"] = descriptor
            await write_frame(writer, header)
            await self._send_bytes(writer, raw)
            ack = await asyncio.wait_for(read_frame(reader), self.timeout)
            if not ack.get("ok"):
                raise TransferError(f"decode worker refused the KV: {ack.get('error')}")
            if self.on_sent is not None:
                self.on_sent(nbytes, time.monotonic() - began)
            if not room.done.done():
                room.done.set_result(nbytes)
        except Exception as exc:
            # not after its timeout (a TypeError from a CUDA tensor once stalled the warmup).
            message = str(exc) or type(exc).__name__
            log.warning("KV send failed: %s", message)
            try:
                await write_frame(writer, {"ok": False, "error": message})
            except (OSError, RuntimeError):
                pass
            if room is not None and not room.done.done():
                room.done.set_exception(TransferError(f"KV transfer failed: {message}"))
                room.done.exception()
            if room is not None and room_id is not None and not room.ready.done():  # the prefill never came: forget it
                self._rooms.pop(room_id, None)
        finally:
            if release is not None:
                release()
            writer.close()

    async def _send_bytes(self, writer: asyncio.StreamWriter, raw: memoryview) -> None:
        began = time.monotonic()
        for offset in range(0, len(raw), _CHUNK):
            chunk = raw[offset : offset + _CHUNK]
            writer.write(chunk)
            await writer.drain()
            if self.link_gbps:
                due = (offset + len(chunk)) * 8 / (self.link_gbps * 1e9)
                lag = due - (time.monotonic() - began)
                if lag > 0:
                    await asyncio.sleep(lag)


@dataclass
class ReceivedKV:
    first_token: int
    start: int
    num_tokens: int
    prefill_cached_tokens: int
    nbytes: int
    data: Any  # torch tensor in KVPool.read layout


async def fetch_kv(
    host: str,
    port: int,
    room: int,
    decode_prefix_len: int,
    timeout: float,
    store: Callable[[ReceivedKV], Awaitable[None]],
    same_host: bool = True,
) -> ReceivedKV:
    """Decode side: fetch the KV of ``room`` from the prefill's bootstrap server and hand it
    to ``store`` (which writes it into the pool) before acknowledging. ``same_host`` offers
    the shared-memory / CUDA IPC handoff (used when the prefill is on this host). The
    ``data`` of the ReceivedKV is valid inside ``store`` only (it may map shared memory);
    the returned object has ``data=None``."""
    import torch

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=_CHUNK * 4), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise TransferError(
            f"cannot reach the prefill bootstrap server {host}:{port}: {exc or type(exc).__name__}"
        ) from None
    try:
        request: dict[str, Any] = {"room": room, "decode_prefix_len": decode_prefix_len}
        if same_host:
            request["host"], request["pid"] = _host_token(), os.getpid()
        await write_frame(writer, request)
        header = await asyncio.wait_for(read_frame(reader), timeout)
        if not header.get("ok"):
            raise TransferError(f"prefill worker failed: {header.get('error')}")
        nbytes = int(header["nbytes"])
        dtype = getattr(torch, header["dtype"])
        close = None
        try:
            if "handoff" in header:
                from .kv_handoff import attach

                raw, close = attach(header["handoff"])
            else:
                raw = await asyncio.wait_for(_read_into_tensor(reader, nbytes), timeout)
            data = (raw.view(dtype) if raw.dtype != dtype else raw).reshape(header["shape"])
            received = ReceivedKV(
                int(header["first_token"]),
                int(header["start"]),
                int(header["num_tokens"]),
                int(header["prefill_cached_tokens"]),
                nbytes,
                data,
            )
            del raw, data
            try:
                await store(received)
            except (RuntimeError, ValueError) as exc:
                await write_frame(writer, {"ok": False, "error": str(exc)})
                raise TransferError(f"could not store the received KV: {exc}") from None
            finally:
                received.data = None
        finally:
            if close is not None:
                close()
        await write_frame(writer, {"ok": True})
        return received
    except (
        asyncio.TimeoutError,
        asyncio.IncompleteReadError,
        OSError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        RuntimeError,
    ) as exc:
        if isinstance(exc, TransferError):
            raise
        raise TransferError(f"KV transfer from {host}:{port} room {room} failed: {exc or type(exc).__name__}") from None
    finally:
        writer.close()


async def _read_into_tensor(reader: asyncio.StreamReader, nbytes: int):
    """Read exactly ``nbytes`` straight into a new uint8 tensor (one copy out of the stream
    buffer, instead of readexactly's join plus a copy to make it writable)."""
    import torch

    buffer = torch.empty(nbytes, dtype=torch.uint8)
    view = buffer.numpy().data if nbytes else memoryview(b"")  # ndarray.data: a writable memoryview of it
    got = 0
    while got < nbytes:
        piece = await reader.read(min(_CHUNK * 4, nbytes - got))
        if not piece:
            raise asyncio.IncompleteReadError(b"", nbytes)
        view[got : got + len(piece)] = piece
        got += len(piece)
    return buffer


def _host_token() -> str:
    from .kv_handoff import host_token

    return host_token()


def _host_bytes(data):
    """The raw bytes of a KV tensor as a host buffer for the socket. A tensor on an
    accelerator is copied to host memory first (``.numpy()`` only works on CPU tensors)."""
    import torch

    if not data.numel():
        return b""
    if data.device.type != "cpu":
        # a page-locked staging buffer: the device-to-host copy runs at full DMA speed
        host = torch.empty(data.shape, dtype=data.dtype, pin_memory=True)
        host.copy_(data)
        data = host
    return data.contiguous().view(-1).view(torch.uint8).numpy()
