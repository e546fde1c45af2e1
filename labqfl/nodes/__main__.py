"""``python -m labqfl.nodes ROLE ...`` = ``labqfl node ROLE ...`` (what the launcher spawns)."""

from __future__ import annotations

import sys

from labqfl.cli import app

if __name__ == "__main__":
    app(args=["-v", "node", *sys.argv[1:]], prog_name="labqfl")  # node logs at INFO (its own log file)
