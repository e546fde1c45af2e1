"""tests/nodes: this folder's helper modules (node_helpers) importable, as tests/fl/flower and tests/qkd/pipeline."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
