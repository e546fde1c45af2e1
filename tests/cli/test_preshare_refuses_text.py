"""Review s34 M3: ``labqfl keys preshare --file F`` took any file of 48 bytes or more as the pair's real
pre-shared secret (a public JSON document became the authentication root) and then zeroed and deleted F.
Text files and files with a byte value far too frequent for a random secret are now refused, before
anything is touched: one ``error:`` line naming the file, the file left as it is, no store written."""

from __future__ import annotations

import gzip
import io
import math
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore.preshare import (
    CONTAINER_MAGIC,
    FREQUENT_BYTE_FALSE_REFUSAL,
    frequent_byte,
    frequent_byte_limit,
    is_text,
    read_secret_file,
)

runner = CliRunner()


def _preshare(file: Path, data: Path):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["keys", "preshare", "--pair", "C1-C2", "--file", str(file), "--data-dir", str(data)])


def _station_json() -> bytes:
    res = runner.invoke(app, ["station", "show", "--json"])
    assert res.exit_code == 0, res.output
    return res.stdout.encode("utf-8")


def _zipped(content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.md", content)
    return buf.getvalue()


def _sparse() -> bytes:
    """A binary file with 12 zero bytes among 52 random non-zero ones (a padded structure, not a secret)."""
    rng = np.random.default_rng(11)
    b = rng.integers(1, 256, 64, dtype=np.uint8)
    b[rng.choice(64, 12, replace=False)] = 0
    return b.tobytes()


@pytest.mark.parametrize(("name", "make", "needle"), [
    ("ss.json", _station_json, "is text"),
    ("station.toml", lambda: 'name = "x"\ndescription = "ein Sagnac-Ring — 4 Clients, µ = 0.5, 10 km"\n'.encode(),
     "is text"),
    ("notes.txt", lambda: "\ufeffthe secret?\tC1-C2\r\nwhere\x0cis\x0bit, asked the operator\n".encode(), "is text"),
    ("utf16.txt", lambda: "a UTF-16 document, not a secret key".encode("utf-16-le"), "holds byte 0x00"),
    ("padded.bin", _sparse, "holds byte 0x00 12 times in 64 bytes"),
    # second review s34 F5: a compressed public document passed the text and frequency checks
    ("readme.gz", lambda: gzip.compress(Path(__file__).read_bytes(), mtime=0), "starts as a gzip file does"),
    ("readme.zip", lambda: _zipped(Path(__file__).read_bytes()), "starts as a zip file does"),
])
def test_a_document_is_refused_and_left_as_it_is(tmp_path: Path, name: str, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / name
    content = make()
    assert len(content) >= 48
    f.write_bytes(content)
    data = tmp_path / "data"
    res = _preshare(f, data)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith(f"error: secret file {f} "), res.output
    assert needle in lines[0] and "not a random secret" in lines[0] and "left as it is" in lines[0]
    assert f.read_bytes() == content  # neither zeroed nor deleted
    assert not (data / "keystore").exists()  # no store created or written


def test_random_secrets_of_every_size_pass() -> None:
    rng = np.random.default_rng(2026)
    for n in (48, 49, 64, 100, 1000, 8192, 1 << 20):
        for _ in range(3 if n < 8192 else 1):
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            assert not is_text(data) and frequent_byte(data) is None, n


def test_is_text_false_refusal_bound_holds_exactly(tmp_path: Path) -> None:
    """The docstring's count: P(n) = a(n)/256^n of uniform n-byte strings that is_text accepts, from the
    running Python's Unicode tables; P(48) < 1e-16, P(48..51) decreasing, coefficient sum < 1."""
    def ok(c: str) -> bool:
        return is_text(c.encode("utf-8"))

    A = sum(ok(chr(b)) for b in range(0x80))
    B = sum(ok(chr(c)) for c in range(0x80, 0x800))
    C = sum(ok(chr(c)) for c in range(0x800, 0x10000) if not 0xD800 <= c < 0xE000)
    D = sum(ok(chr(c)) for c in range(0x10000, 0x110000))
    assert A == 100 and B > 1500
    a = [1]
    for n in range(1, 52):
        a.append(A * a[n - 1] + B * (a[n - 2] if n >= 2 else 0) + C * (a[n - 3] if n >= 3 else 0)
                 + D * (a[n - 4] if n >= 4 else 0))
    P = [Fraction(a[n], 256 ** n) for n in range(52)]
    assert P[48] < Fraction(1, 10 ** 16) and P[48] > P[49] > P[50] > P[51]
    assert Fraction(A, 256) + Fraction(B, 256 ** 2) + Fraction(C, 256 ** 3) + Fraction(D, 256 ** 4) < 1
    # the recurrence counts exactly: every 2-byte string, by brute force
    assert sum(is_text(bytes([x, y])) for x in range(256) for y in range(256)) == a[2]


@pytest.mark.parametrize("n", [48, 64, 300, 8192, 1 << 20])
def test_frequent_byte_limit_false_refusal_below_its_bound(n: int) -> None:
    """Binomial tail, in exact integers: 256 · P(Bin(n, 1/256) >= limit) <= 1e-10 (the union bound over the
    byte values). P(X = j) = C(n, j)·255^(n−j)/256^n; beyond the limit the terms fall by the ratio
    r_j = (n−j)/((j+1)·255) <= r_k < 1, so the tail is at most P(X = k)/(1 − r_k)."""
    k = frequent_byte_limit(n)
    assert k > n / 256
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (n - k) * math.log(255)
    # C(n, k)·255^(n−k) exactly only where the integers stay small enough to be quick; lgamma above otherwise
    if n <= 8192:
        term = Fraction(math.comb(n, k) * 255 ** (n - k), 256 ** n)
        r = Fraction(n - k, (k + 1) * 255)
        assert r < 1 and 256 * term / (1 - r) <= Fraction(FREQUENT_BYTE_FALSE_REFUSAL)
    r_f = (n - k) / ((k + 1) * 255)
    assert math.log(256) + log_term - n * math.log(256) - math.log(1 - r_f) < math.log(FREQUENT_BYTE_FALSE_REFUSAL)


def test_read_secret_file_reads_only(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_bytes(_station_json())
    before = f.stat()
    with pytest.raises(Exception, match="is text"):
        read_secret_file(f)
    after = f.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_uniform_secret_starts_as_a_container_file_with_probability_below_1e_6() -> None:
    """The container check's false refusal of a uniformly random secret: Σ 256^-len over the magics."""
    assert sum(Fraction(1, 256 ** len(m)) for m, _ in CONTAINER_MAGIC) < Fraction(1, 10**6)
    assert all(len(m) >= 3 for m, _ in CONTAINER_MAGIC)
