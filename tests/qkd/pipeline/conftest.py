"""Makes this folder's shared helpers (``qkdpp_helpers``) importable by its test modules, which
pytest imports in importlib mode (no package, no sys.path entry of their own)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
