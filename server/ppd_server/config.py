"""Router configuration: frozen dataclasses with ONE source of defaults (the field defaults).

Precedence, lowest first: field defaults < YAML file (``--config``) < ``PPD_*`` environment
variables < command-line flags. :meth:`RouterConfig.validate` runs at startup and raises
:class:`ConfigError` naming the offending field, so a bad value never reaches the server.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "PPD_"
BACKENDS = ("ppd", "sglang")
_LAYOUT_PART = re.compile(r"(\d+)([PDR])")


class ConfigError(ValueError):
    """A configuration value is invalid; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class PrefillSpec:
    url: str
    bootstrap_port: int | None = None


def parse_worker_counts(text: str) -> tuple[int, int, int]:
    """(prefill, decode, unified) counts of a fleet layout: counts of P, D and R (unified)
    workers such as ``1P1D``, ``2P2D``, ``4R`` or ``1P2D1R``; case-insensitive, a repeated
    kind adds up. The one grammar of ``--embedded`` here and ``ppd-sim --cluster``. Raises
    ValueError saying what is wrong (the caller says which option): no worker, or prefill
    without decode workers (or the reverse)."""
    s = text.strip().upper()
    parts = _LAYOUT_PART.findall(s)
    if not s or "".join(n + k for n, k in parts) != s:
        raise ValueError("write counts of P (prefill), D (decode), R (unified), e.g. 1P1D, 1P3D, 2P2D, 4R, 1P2D1R")
    counts = {"P": 0, "D": 0, "R": 0}
    for n, kind in parts:
        counts[kind] += int(n)
    prefill, decode, unified = counts["P"], counts["D"], counts["R"]
    if prefill + decode + unified == 0:
        raise ValueError("no worker; give at least one")
    if (prefill > 0) != (decode > 0):
        raise ValueError("prefill (P) and decode (D) workers come in pairs of kinds; give both or neither")
    return prefill, decode, unified


def format_worker_counts(prefill: int, decode: int, unified: int) -> str:
    """The layout text :func:`parse_worker_counts` reads back, e.g. ``1P2D1R``."""
    return "".join(f"{n}{k}" for n, k in ((prefill, "P"), (decode, "D"), (unified, "R")) if n)


@dataclass(frozen=True, slots=True)
class EmbeddedLayout:
    """How many embedded workers of each role to start (``1P1D``, ``2P2D``, ``1R``, ``1P2D1R``...)."""

    prefill: int = 1
    decode: int = 1
    unified: int = 0

    @classmethod
    def parse(cls, text: str) -> EmbeddedLayout:
        try:
            return cls(*parse_worker_counts(text))
        except ValueError as exc:
            raise ConfigError("embedded", f"bad layout {text!r}: {exc}") from None

    def __str__(self) -> str:
        return format_worker_counts(self.prefill, self.decode, self.unified)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    # front door
    host: str = "127.0.0.1"
    port: int = 30000
    # several API keys = several tenants, each with its own conversation-id namespace (auth.py)
    api_key: tuple[str, ...] = field(default=(), repr=False)  # a str given here is one key
    api_key_file: str | None = None  # more API keys, one per line ('#' comments)
    admin_key: str | None = field(default=None, repr=False)
    log_content: bool = False  # opt in: prompts on the ppd.route span (never in logs)
    shared_prefix_cache: bool = False  # several API keys: let tenants share the workers' prefix caches
    # workers (none given -> embedded cluster)
    prefill: tuple[PrefillSpec, ...] = ()
    decode: tuple[str, ...] = ()
    worker: tuple[str, ...] = ()
    # routing
    policy: str = "ppd"
    profile: str | None = None  # JSON saved by `ppd-server profile`
    tokenizer: str | None = None  # .gguf / HF dir; default: the workers' model_path when local
    link_gbps: float = 10.0  # P->D link bandwidth the cost model assumes
    max_sessions: int = 100_000
    session_ttl_s: float = 3600.0
    # worker management
    load_interval_s: float = 0.5
    request_timeout_s: float = 600.0  # whole-request cap, also the idle-read cap on a stream
    connect_timeout_s: float = 3.0
    max_retries: int = 2
    startup_timeout_s: float = 180.0
    # production hardening (docs/operations.md)
    drain_timeout_s: float = 30.0  # SIGTERM: in-flight streams get this long to finish
    max_header_bytes: int = 32768  # one header line; beyond it a 431 (OpenAI-shaped)
    retry_after_s: int = 1  # Retry-After on 503 (no worker) and 429 (queue full) answers
    max_queue_per_worker: int = 256  # requests the router keeps in flight per worker; beyond: 429 (0 = no bound)
    first_byte_timeout_s: float = 0.0  # a stream silent this long after its headers is retried elsewhere (0 = off)
    header_timeout_s: float = 0.0  # a stream's worker without response headers this long: retried elsewhere (0 = off)
    breaker_cooldown_s: float = 1.0  # a worker whose request failed stays out at least this long (doubling)
    breaker_max_cooldown_s: float = 60.0  # ... up to this
    # embedded cluster
    embedded: str = "1P1D"
    model: str = "smollm2"
    backend: str = "ppd"
    model_path: str | None = None  # --backend sglang
    worker_threads: int = 1
    kv_link_gbps: float | None = None
    device: str = "cpu"  # ppd-worker devices, comma-separated (cuda:0,cuda:1): workers round-robin
    gpu_memory_fraction: float | None = None  # per ppd-worker share of a GPU that several share
    decode_rows_tokens: int | None = None  # ppd-worker --decode-rows-tokens (None: the worker's default)
    tp: int = 1
    dry_run: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.api_key is None or isinstance(self.api_key, str):  # RouterConfig(api_key="k")
            object.__setattr__(self, "api_key", (self.api_key,) if self.api_key else ())

    def api_keys(self) -> tuple[str, ...]:
        """Every API key: ``api_key`` plus the lines of ``api_key_file`` (read on each call: at
        validation and when the app is built). Raises ConfigError on an unreadable file."""
        keys = list(self.api_key)
        if self.api_key_file:
            try:
                with open(self.api_key_file, encoding="utf-8") as f:
                    lines = [ln.strip() for ln in f]
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError("api_key_file", f"cannot read {self.api_key_file}: {e}") from None
            keys += [ln for ln in lines if ln and not ln.startswith("#")]
            if len(keys) == len(self.api_key):
                raise ConfigError("api_key_file", f"{self.api_key_file} holds no key")
        for k in keys:
            if any(c.isspace() or not c.isprintable() for c in k):
                raise ConfigError("api_key", "an API key must not contain spaces or control characters")
        return tuple(dict.fromkeys(keys))

    @property
    def embedded_layout(self) -> EmbeddedLayout:
        return EmbeddedLayout.parse(self.embedded)

    @property
    def devices(self) -> list[str]:
        return [d.strip() for d in self.device.split(",")]

    @property
    def has_external_workers(self) -> bool:
        return bool(self.prefill or self.decode or self.worker)

    def replace(self, **changes: Any) -> RouterConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> RouterConfig:
        """Raise :class:`ConfigError` naming the first invalid field; return self."""
        if not 0 < self.port < 65536:
            raise ConfigError("port", f"must be in 1..65535, got {self.port}")
        for name in (
            "load_interval_s",
            "request_timeout_s",
            "connect_timeout_s",
            "startup_timeout_s",
            "session_ttl_s",
            "link_gbps",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if not self.drain_timeout_s >= 0:
            raise ConfigError("drain_timeout_s", f"must be >= 0, got {self.drain_timeout_s}")
        if not 8190 <= self.max_header_bytes <= 1 << 20:
            raise ConfigError("max_header_bytes", f"must be in 8190..1048576, got {self.max_header_bytes}")
        if not 0 <= self.breaker_cooldown_s <= self.breaker_max_cooldown_s:
            raise ConfigError(
                "breaker_cooldown_s",
                f"must be in 0..breaker_max_cooldown_s ({self.breaker_max_cooldown_s}), got {self.breaker_cooldown_s}",
            )
        if not self.first_byte_timeout_s >= 0:
            raise ConfigError("first_byte_timeout_s", f"must be >= 0, got {self.first_byte_timeout_s}")
        if not self.header_timeout_s >= 0:
            raise ConfigError("header_timeout_s", f"must be >= 0, got {self.header_timeout_s}")
        if self.max_queue_per_worker < 0:
            raise ConfigError("max_queue_per_worker", f"must be >= 0, got {self.max_queue_per_worker}")
        if not 1 <= self.retry_after_s <= 3600:
            raise ConfigError("retry_after_s", f"must be in 1..3600, got {self.retry_after_s}")
        if self.max_retries < 0 or self.max_retries > 10:
            raise ConfigError("max_retries", f"must be in 0..10, got {self.max_retries}")
        if self.max_sessions < 1:
            raise ConfigError("max_sessions", f"must be >= 1, got {self.max_sessions}")
        if self.worker_threads < 1 or self.tp < 1:
            raise ConfigError("worker_threads" if self.worker_threads < 1 else "tp", "must be >= 1")
        for device in self.devices:
            if not (device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
                raise ConfigError("device", f"each device must be cpu, cuda or cuda:N, got {device!r}")
        if self.decode_rows_tokens is not None and self.decode_rows_tokens < 0:
            raise ConfigError("decode_rows_tokens", f"must be >= 0, got {self.decode_rows_tokens}")
        if self.gpu_memory_fraction is not None and not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError("gpu_memory_fraction", f"must be in (0, 1], got {self.gpu_memory_fraction}")
        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "sglang" and not self.model_path and not self.has_external_workers:
            raise ConfigError("model_path", "--backend sglang needs --model-path")
        for p in self.prefill:
            _check_url("prefill", p.url)
            if p.bootstrap_port is not None and not 0 < p.bootstrap_port < 65536:
                raise ConfigError("prefill", f"bootstrap port of {p.url} must be in 1..65535")
        for u in self.decode:
            _check_url("decode", u)
        for u in self.worker:
            _check_url("worker", u)
        if bool(self.prefill) != bool(self.decode):
            raise ConfigError(
                "prefill" if not self.prefill else "decode", "P/D needs at least one --prefill AND one --decode worker"
            )
        if not self.has_external_workers:
            self.embedded_layout  # noqa: B018 - raises ConfigError on a bad layout
        _check_policy(self.policy)
        self.api_keys()  # raises ConfigError on a bad key or key file
        if self.admin_key is not None and (not self.admin_key or any(c.isspace() for c in self.admin_key)):
            raise ConfigError("admin_key", "must be non-empty, without spaces")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", f"must be debug|info|warning|error, got {self.log_level!r}")
        return self


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected a URL like http://127.0.0.1:30001, got {url!r}")


def _check_policy(spec: str) -> None:
    from ppd_server.routing.policies import make_policy

    try:
        make_policy(spec)
    except ValueError as e:
        raise ConfigError("policy", str(e)) from None


# --- loading -----------------------------------------------------------------------------

_FIELD_TYPES = {f.name: f.type for f in fields(RouterConfig)}


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML/env/flag value to the field's type, or raise ConfigError naming it."""
    if name not in _FIELD_TYPES:
        raise ConfigError(name, f"unknown setting; known: {', '.join(sorted(_FIELD_TYPES))}")
    kind = str(_FIELD_TYPES[name])
    try:
        if value is None:
            return None
        if name == "prefill":
            return tuple(_prefill_spec(v) for v in _as_list(value))
        if name in ("decode", "worker"):
            return tuple(str(v) for v in _as_list(value))
        if name == "api_key":  # one string is one key (never split: keys may hold commas)
            return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"invalid value {value!r} (expected {kind})") from None


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    return list(value)


def _prefill_spec(value: Any) -> PrefillSpec:
    if isinstance(value, PrefillSpec):
        return value
    if isinstance(value, Mapping):
        port = value.get("bootstrap_port")
        return PrefillSpec(str(value["url"]), None if port in (None, "none") else int(port))
    if isinstance(value, (list, tuple)):
        url, *rest = value
        port = rest[0] if rest else None
        return PrefillSpec(str(url), None if port in (None, "none") else int(port))
    parts = str(value).split()
    return _prefill_spec(parts)


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``PPD_POLICY=pd`` -> {"policy": "pd"}; unknown PPD_ names are ignored (other tools use the prefix)."""
    out: dict[str, Any] = {}
    for name in _FIELD_TYPES:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            out[name] = coerce(name, raw)
    return out


def from_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError("config", f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"{path} must hold a mapping of settings")
    return {k.replace("-", "_"): coerce(k.replace("-", "_"), v) for k, v in data.items()}


def load_config(
    flags: Mapping[str, Any], *, yaml_path: str | None = None, environ: Mapping[str, str] | None = None
) -> RouterConfig:
    """Merge defaults < YAML < env < flags (flags given as None are 'not set') and validate."""
    merged: dict[str, Any] = {}
    if yaml_path:
        merged.update(from_yaml(yaml_path))
    merged.update(from_env(os.environ if environ is None else environ))
    merged.update({k: coerce(k, v) for k, v in flags.items() if v is not None})
    return RouterConfig(**merged).validate()


DEFAULTS = {f.name: f.default for f in fields(RouterConfig)}  # what --help shows for each field


def default_hint(name: str) -> str:
    """`` (default: X)`` for a field's --help text (the CLI of serve and of ``profile``)."""
    return f" (default: {DEFAULTS[name]})"
