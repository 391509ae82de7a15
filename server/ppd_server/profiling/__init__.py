"""Cost profiles: what the router's cost model and the simulator start from.

One concept per module:

* :mod:`.probe` - ``measure_profile``: drive a running worker over HTTP through a step-time grid
  (prefill, append over a cached prefix, decode batch x context, mixed prefill+decode iterations);
* :mod:`.fit` - ``fit_coefficients``: the joint non-negative least-squares fit of those timings to
  the step-time model of ``ppd_server.routing.latency``;
* :mod:`.roofline` - ``roofline_profile``: coefficients from a GPU datasheet and a model size;
* :mod:`.presets` - the shipped measured profiles (``DEFAULT_PROFILE``: SmolLM2 on the CPU
  engine; ``H200_PPD_ENGINE_LLAMA8B``: our engine on an H200);
* :mod:`.store` - ``save_profile`` / ``load_profile`` (a file or a preset name) / ``validate_profile``.

``ppd-server profile`` (``ppd_server.cli``) is the command line over :mod:`.probe`.
The probe imports httpx lazily; nothing here needs torch.
"""

from ppd_server.profiling.fit import fit_coefficients
from ppd_server.profiling.presets import DEFAULT_PROFILE, H200_PPD_ENGINE_LLAMA8B, PRESET_NAMES, preset
from ppd_server.profiling.probe import GRIDS, ProfileError, ProfileGrid, measure_profile
from ppd_server.profiling.roofline import roofline_profile
from ppd_server.profiling.store import load_profile, save_profile, validate_profile

__all__ = [
    "DEFAULT_PROFILE",
    "GRIDS",
    "H200_PPD_ENGINE_LLAMA8B",
    "PRESET_NAMES",
    "ProfileError",
    "ProfileGrid",
    "fit_coefficients",
    "load_profile",
    "measure_profile",
    "preset",
    "roofline_profile",
    "save_profile",
    "validate_profile",
]
