"""Review s33 F10: `keys preshare` killed between its two stores' writes left the secret at C1 only, and
loading the same secret again was refused for good (a fresh out-of-band delivery was the only way out).
Now the same secret completes the interrupted load; a second load into both, a different secret that
shares windows with it, and a block already used at one end are still refused."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"

_CHILD = textwrap.dedent("""
    import os, signal, sys
    from labqfl.keystore import store as S
    orig = S.KeyStore.add_block
    def add_block(self, pair, bits, **kw):
        if self.node == "C2":  # a power cut between the two stores' writes
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, pair, bits, **kw)
    S.KeyStore.add_block = add_block
    from labqfl.cli import app
    sys.argv = ["labqfl", "keys", "preshare", "--pair", "C1-C2", "--file", sys.argv[1], "--data-dir", sys.argv[2]]
    app()
""")


def _preshare(data: Path, file: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["keys", "preshare", "--pair", PAIR, "--file", str(file), *extra],
                              env={"LABQFL_DATA_DIR": str(data)})


@pytest.fixture
def half_loaded(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A data dir where `keys preshare` was killed after C1's write and before C2's."""
    secret = np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()
    (tmp_path / "s.bin").write_bytes(secret)
    data = tmp_path / "data"
    res = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "s.bin"), str(data)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == -signal.SIGKILL, res.stderr
    with KeyStore.for_node("C1", data, create=False) as c1, KeyStore.for_node("C2", data, create=False) as c2:
        assert [b["nbits"] for b in c1.blocks()] == [512] and c2.blocks() == []
    assert (tmp_path / "s.bin").exists()
    return data, tmp_path / "s.bin", secret


def test_loading_the_same_secret_again_completes_the_interrupted_load(tmp_path: Path, half_loaded):
    data, file, secret = half_loaded
    shutil.copy(file, tmp_path / "copy.bin")
    res = _preshare(data, file)
    assert res.exit_code == 0, res.output
    assert "completed an interrupted load" in res.output and "node C2" in res.output
    assert not file.exists()  # destroyed as after any successful load
    with KeyStore.for_node("C1", data, create=False) as c1, KeyStore.for_node("C2", data, create=False) as c2:
        (b1,), (b2,) = c1.blocks(), c2.blocks()
        assert b1["block_id"] == b2["block_id"] and b1["meta"] == b2["meta"] and b2["nbits"] == 512
        k = c1.take(PAIR, 512, "auth")
        assert np.array_equal(c2.take_exact(PAIR, k.refs, "auth").bits, k.bits)
        assert np.array_equal(k.bits, np.unpackbits(np.frombuffer(secret, np.uint8)))
    # a load into both is complete: the same secret again is refused, as any second load
    res = _preshare(data, tmp_path / "copy.bin")
    assert res.exit_code == 1 and "already loaded" in res.output


def test_a_different_secret_sharing_windows_with_a_half_load_is_still_refused(tmp_path: Path, half_loaded):
    data, file, secret = half_loaded
    (tmp_path / "longer.bin").write_bytes(secret + b"\x5a")  # the same secret with one byte appended
    res = _preshare(data, tmp_path / "longer.bin")
    assert res.exit_code == 1 and "already loaded" in res.output, res.output
    with KeyStore.for_node("C2", data, create=False) as c2:
        assert c2.blocks() == []


def test_a_half_loaded_block_already_used_at_one_end_is_not_completed(tmp_path: Path, half_loaded):
    data, file, _ = half_loaded
    with KeyStore.for_node("C1", data, create=False) as c1:
        c1.take(PAIR, 64, "auth")
    res = _preshare(data, file)
    assert res.exit_code == 1 and "already loaded" in res.output, res.output
    with KeyStore.for_node("C2", data, create=False) as c2:
        assert c2.blocks() == []
