"""``python -m ppd_server`` = ``ppd-server``."""

from __future__ import annotations

import sys

from ppd_server.cli import main

sys.exit(main())
