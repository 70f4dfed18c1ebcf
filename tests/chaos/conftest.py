"""The nemesis suite runs only through `make chaos` (SLUICE_CHAOS=1): minutes of faults, not part of `make test`."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("SLUICE_CHAOS") else ["test_*.py"]
