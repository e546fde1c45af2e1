"""Suite-wide fixtures.

Every test gets its own data directory (``LABQFL_DATA_DIR``, unless the environment already sets
one): commands that write node data by default — key stores, and since issue 16 the CSPRNG
clients' private choice logs that ``labqfl acquire --out`` leaves under ``nodes/<Ci>/choices/`` —
never touch the user's real data directory. Tests that pass ``--data-dir`` or their own
environment are unaffected.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("LABQFL_DATA_DIR"):
        monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path_factory.mktemp("labqfl-data")))
