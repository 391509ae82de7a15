"""Profile files: save, load (a path or a preset name), validate.

A profile is the JSON object the cost model starts from::

    {"model": "...", "source": "...", "coefficients": {<CostCoefficients fields>},
     "kv_bytes_per_token": int, "fit": {"<kind>_abs_pct_err": ..}, "samples": [...],
     "prior_rel_std": float (optional: how far the cost model trusts it), "grid": {...} (optional)}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ppd_server.profiling.presets import PRESET_NAMES, preset
from ppd_server.routing.types import CostCoefficients


def save_profile(profile: dict[str, Any], path: str | Path) -> None:
    validate_profile(profile)
    Path(path).write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile file, or return a preset (``PRESET_NAMES``) when ``path`` is
    one of their names and no such file exists; errors name the file and the problem."""
    p = Path(path)
    if str(path) in PRESET_NAMES and not p.exists():
        return preset(str(path))
    try:
        profile = json.loads(p.read_text())
    except OSError as e:
        hint = f" (presets: {', '.join(PRESET_NAMES)})" if not p.suffix else ""
        raise ValueError(f"cannot read profile {str(path)!r}: {e.strerror}{hint}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"profile {str(path)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"profile {str(path)!r} is not a text file") from None
    try:
        validate_profile(profile)
    except ValueError as e:
        raise ValueError(f"profile {str(path)!r}: {e}") from None
    return profile


def validate_profile(profile: Any) -> None:
    if not isinstance(profile, dict) or not isinstance(profile.get("coefficients"), dict):
        raise ValueError("a profile must be a JSON object with a 'coefficients' object")
    CostCoefficients.from_dict(profile["coefficients"])
    kv = profile.get("kv_bytes_per_token") or 0
    if not isinstance(kv, (int, float)) or isinstance(kv, bool) or kv < 0:
        raise ValueError(f"kv_bytes_per_token must be a number >= 0, got {kv!r}")
