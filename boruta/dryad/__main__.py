"""`python -m boruta.dryad [--config FILE]` is `boruta dryad [--config FILE]` (and `init`)."""
from __future__ import annotations

import sys

from boruta.cli import run

if __name__ == "__main__":
    sys.exit(run(["dryad", *sys.argv[1:]]))
