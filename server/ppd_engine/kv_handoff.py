"""Same-host KV handoff: the KV of a prefill reaches a decode worker on the same machine
without going through the socket.

The TCP protocol (``kv_transfer``) stays the control channel; only the payload moves:
- CPU tensors: the prefill writes the KV into a POSIX shared-memory segment (/dev/shm, via
  ``multiprocessing.shared_memory``) and sends its name; the decode maps it, copies it into
  its pool and acknowledges; the prefill then unlinks it. One memcpy on each side, no
  kernel socket copies.
- CUDA tensors: the prefill sends a CUDA IPC handle of the device tensor (``torch``'s own
  ``reduce_tensor``); the decode maps it on its device and copies device to device. This code
  path is present but was NOT run here (no GPU on the development machine).

"Same host" is decided by the decode side offering its ``host_token()`` (boot id plus the
identity of its /dev/shm mount, so two containers with separate /dev/shm never match) and
the prefill comparing it with its own; anything else falls back to TCP bytes.

Contract: ``publish(tensor) -> (descriptor, release)``: the descriptor is JSON (goes in the
header frame), ``release()`` frees the producer's side and is called after the decode
acknowledged (or on failure). ``attach(descriptor) -> (tensor, close)``: a tensor valid
until ``close()``; the caller copies out of it before closing.
"""

from __future__ import annotations

import base64
import os
import pickle
from collections.abc import Callable
from functools import lru_cache
from typing import Any

KINDS = ("shm", "cuda_ipc")


@lru_cache(maxsize=1)
def host_token() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "no-boot-id"
    try:
        shm = os.stat("/dev/shm")
        mount = f"{shm.st_dev}:{shm.st_ino}"
    except OSError:
        mount = "no-dev-shm"
    return f"{boot}/{mount}"


def publish(data: Any) -> tuple[dict[str, Any], Callable[[], None]]:
    """Expose ``data`` (a torch tensor) to a process on this host."""
    if data.device.type == "cuda":
        return _publish_cuda(data)
    return _publish_shm(data)


def attach(descriptor: dict[str, Any], device: Any = None) -> tuple[Any, Callable[[], None]]:
    kind = descriptor.get("kind")
    if kind == "shm":
        return _attach_shm(descriptor)
    if kind == "cuda_ipc":
        return _attach_cuda(descriptor)
    raise ValueError(f"unknown KV handoff kind {kind!r}")


def _publish_shm(data: Any) -> tuple[dict[str, Any], Callable[[], None]]:
    from multiprocessing import shared_memory

    import torch

    nbytes = data.numel() * data.element_size()
    # Registered with this process's resource tracker: if the producer dies before release(),
    # the segment is still unlinked at its exit.
    segment = shared_memory.SharedMemory(create=True, size=max(1, nbytes))
    try:
        target = torch.frombuffer(segment.buf, dtype=torch.uint8, count=nbytes) if nbytes else None
        if target is not None:
            target.copy_(data.contiguous().view(-1).view(torch.uint8))
        del target
    except BaseException:
        segment.close()
        segment.unlink()
        raise

    def release() -> None:
        try:
            segment.close()
        except BufferError:
            pass
        try:
            segment.unlink()
        except FileNotFoundError:
            pass

    return {"kind": "shm", "name": segment.name, "nbytes": nbytes}, release


def _attach_shm(descriptor: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    # A plain read-only-in-effect mapping of /dev/shm/NAME (MAP_PRIVATE: never written back),
    # not SharedMemory(name=...): on Python < 3.13 that registers the segment with the
    # consumer's resource tracker too, which then unlinks it twice or warns.
    import mmap

    import torch

    name = str(descriptor["name"]).lstrip("/")
    if not name or "/" in name:
        raise ValueError(f"bad shared memory segment name {descriptor['name']!r}")
    nbytes = int(descriptor["nbytes"])
    fd = os.open(f"/dev/shm/{name}", os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < nbytes:
            raise ValueError(f"shared memory segment {name} holds {size} bytes, the header announced {nbytes}")
        mapping = mmap.mmap(fd, max(1, nbytes), access=mmap.ACCESS_COPY) if nbytes else None
    finally:
        os.close(fd)
    holder = {
        "tensor": torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes)
        if mapping is not None
        else torch.empty(0, dtype=torch.uint8)
    }

    def close() -> None:
        holder.clear()  # drop the exported buffer before closing the mapping
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:  # a view still lives somewhere: the mapping goes with it
                pass

    return holder["tensor"], close


def _publish_cuda(data: Any) -> tuple[dict[str, Any], Callable[[], None]]:
    # Untested here (no GPU): torch's CUDA IPC, as torch.multiprocessing uses it. The producer
    # keeps ``data`` alive until release(), after the consumer has copied it.
    from torch.multiprocessing.reductions import reduce_tensor

    data = data.contiguous()
    rebuild, args = reduce_tensor(data)
    blob = base64.b64encode(pickle.dumps((rebuild, args))).decode()
    holder = [data]
    return {"kind": "cuda_ipc", "handle": blob}, holder.clear


def _attach_cuda(descriptor: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    # The handle comes from the prefill worker this decode worker was told to fetch from (the
    # router's bootstrap fields), on the same host: it is trusted like the KV bytes themselves.
    rebuild, args = pickle.loads(base64.b64decode(descriptor["handle"]))
    tensor = rebuild(*args)
    holder = [tensor]
    return tensor, holder.clear
