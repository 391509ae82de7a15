"""ChatPPD unit tests reuse the SDK's in-process fake OpenAI-compatible server."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "sdk"))
