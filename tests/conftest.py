"""Suite-wide fixtures.

Every test gets its own data directory (``LABQFL_DATA_DIR``, unless the environment already sets
one): commands that write node data by default — key stores, and since issue 16 the CSPRNG
clients' private choice logs that ``labqfl acquire --out`` leaves under ``nodes/<Ci>/choices/`` —
never touch the user's real data directory. Tests that pass ``--data-dir`` or their own
environment are unaffected.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings

from labqfl.config import StationConfig, load_station_config
from labqfl.serialize import dump_toml

#: Hypothesis profiles (``LABQFL_HYPOTHESIS_PROFILE``). "deterministic", the default and CI's: every
#: run draws the same examples (seeded from each test function), so a test that passed on a commit
#: passes on its clean clone; CI of 2026-12-05 failed on a new random draw of a test whose reference
#: was wrong (tests/qkd/security/test_decoy_fast.py). "explore": fresh random draws on every run, for
#: looking for new failures (README, "Quick start"); what it finds becomes an ``@example``.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("LABQFL_HYPOTHESIS_PROFILE", "deterministic"))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4. Many tests start node,
    SuperLink and SuperNode processes of their own, so more workers than cores only queue them."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets its own subfolder of a ``LABQFL_DATA_DIR`` set for the whole
    run (``.ci/run`` sets one): two workers never share a default key store or runs folder."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = os.environ.get("LABQFL_DATA_DIR")
    if worker and base:
        mine = Path(base) / worker
        mine.mkdir(parents=True, exist_ok=True)
        os.environ["LABQFL_DATA_DIR"] = str(mine)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("LABQFL_DATA_DIR"):
        monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path_factory.mktemp("labqfl-data")))


#: The clients' intensities [signal, decoy, vacuum] of the small test stations: the 10^9-slot operating point the
#: embedded station had until 2026-12-07 (docs/station.md), with its bright decoy. The test stations keep it, so
#: the durations, block sizes and key lengths their tests were tuned to do not follow the embedded point (whose
#: decoy is 0.05 since then, optimised for the 10 s main job).
TEST_STATION_INTENSITIES = {"C1": [0.0294, 0.442, 0.0], "C2": [0.0216, 0.442, 0.0], "C3": [0.0203, 0.442, 0.0],
                            "C4": [0.0294, 0.442, 0.0]}


def write_small_station(folder: Path, *, name: str = "small-test-station", file: str = "small_station.toml",
                        **client: Any) -> Path:
    """Write the small station into ``folder/file``: two clients on a short loop with balanced choices (0.2 s of
    acquisition gives a key at ε_sec = 1e-4; the full default station needs ~60 s for finite-key key). ``client``:
    further settings of both clients (e.g. ``randomness="seeded"``). A plain function, for fixtures of any scope
    (:func:`small_station_file`; a module-scoped fixture asks for :func:`small_station_writer`)."""
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["name"] = name
    d["clients"] = d["clients"][:2]
    d["loop"]["segments_km"] = [0.2, 0.2, 0.2]
    for c in d["clients"]:
        c["insertion_loss_db"] = 0.2
        c["intensities"] = list(TEST_STATION_INTENSITIES[c["name"]])
        c["intensity_probs"] = [0.6, 0.2, 0.2]
        c["basis_x_prob"] = 0.7
        c.update(client)
    p = folder / file
    p.write_text(dump_toml(d), encoding="utf-8")
    return p


@pytest.fixture
def small_station_file(tmp_path: Path) -> Path:
    """The small station (:func:`write_small_station`) in ``tmp_path``. Used by the main-job and
    application-layer tests."""
    return write_small_station(tmp_path)


@pytest.fixture(scope="session")
def small_station_writer() -> Any:
    """:func:`write_small_station`, for fixtures wider than a function (they cannot ask for ``small_station_file``;
    under ``--import-mode=importlib`` a test module cannot import this conftest)."""
    return write_small_station


def _one_pair_station() -> StationConfig:
    """The default simulated station cut to the one pair C1-C2 on a short loop (0.2 km segments, 0.2 dB
    insertion loss) with balanced choices (intensities 0.6/0.2/0.2, basis X 0.7): 0.02 s gives a few
    thousand sifted bits, blocks of ~3·10⁴ sifted bits give key, 0.2 s a key at ε_sec = 1e-4. Clients at
    their default randomness (CSPRNG)."""
    cfg = load_station_config()
    cfg.schedule.pairs = [("C1", "C2")]
    cfg.loop.segments_km = [0.2] * 5
    for c in cfg.clients:
        c.insertion_loss_db = 0.2
        c.intensities = list(TEST_STATION_INTENSITIES[c.name])
        c.intensity_probs = [0.6, 0.2, 0.2]
        c.basis_x_prob = 0.7
    return cfg


@pytest.fixture(scope="session")
def one_pair_station():  # type: ignore[no-untyped-def]
    """``one_pair_station()`` → a fresh :class:`StationConfig` (each call its own, free to edit): the default
    station cut to pair C1-C2 on a short loop (the client-secrets, block-size rule and provenance tests)."""
    return _one_pair_station


@pytest.fixture(scope="session")
def short_loop_seeded_station() -> StationConfig:
    """The default four-client station on a short loop (0.2 km segments) with seeded clients and a pinned
    QRNG epoch: the same tags and key bits in every run (the batched-sifting tests, in process and over
    client nodes, compare two ways of sifting one acquisition). Read-only: copy before editing."""
    cfg = load_station_config(None)
    d = cfg.model_dump()
    d["loop"]["segments_km"] = [0.2] * (len(d["clients"]) + 1)
    for cl in d["clients"]:
        cl["randomness"] = "seeded"
    d["simulation"]["qrng_epoch_base"] = 0
    return type(cfg).model_validate(d)


def _identical_keys(dir_a: Path, dir_b: Path | None = None, pair: str = "C1-C2") -> int:
    """Every bit left in ``pair``'s two stores (its first client's in ``dir_a``, its second's in ``dir_b``, default
    the same folder) is the same at both ends, and there is some; how many bits."""
    import numpy as np

    from labqfl.keystore import KeyStore

    a, b = pair.split("-")
    sa, sb = KeyStore.for_node(a, dir_a), KeyStore.for_node(b, dir_b if dir_b is not None else dir_a)
    try:
        nbits = sa.available_bits(pair, "general")
        assert nbits > 0 and sb.available_bits(pair, "general") == nbits
        ka = sa.take(pair, nbits, "general")
        assert np.array_equal(ka.bits, sb.take_exact(pair, ka.refs, "general").bits)
        return int(nbits)
    finally:
        sa.close()
        sb.close()


@pytest.fixture(scope="session")
def identical_keys() -> Any:
    """``identical_keys(dir_a, dir_b=None, pair="C1-C2")`` → bits: asserts the pair's two stores hold the same,
    non-empty key (taken at one end, the same references at the other)."""
    return _identical_keys


@pytest.fixture(scope="session")
def kill() -> Any:
    """tests/_kill.py, the kill tests' shared scaffolding (wait_for, running, holding, terminate,
    stream_c1, assert_dark, node_children), loaded by path: the suite runs with --import-mode=importlib."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_kill", Path(__file__).with_name("_kill.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the emulated-hardware pair station (tests/modulation, tests/nodes, tests/calibration) ----------------
MODULATION = Path(__file__).resolve().parent / "modulation"
ROOT = Path(__file__).resolve().parents[1]


def emulated_hardware_example(folder: Path) -> Path:
    """examples/station_emulated_hardware.toml written to ``folder`` with its Pulse Streamer emulators on loopback
    addresses of its own: the example binds fixed ports (8050/21328) on 127.0.17.1-4, so two tests opening it at
    once on parallel workers found them taken (clean-clone CI of session 38: "no free address 127.0.17.1")."""
    import random

    net = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}."
    out = folder / "station_emulated_hardware.toml"
    text = (ROOT / "examples" / "station_emulated_hardware.toml").read_text(encoding="utf-8")
    assert text.count('"127.0.17.') == 4, "the example's four Pulse Streamer addresses moved"
    out.write_text(text.replace('"127.0.17.', f'"{net}'), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def emulated_hardware_file() -> Any:
    """:func:`emulated_hardware_example` (tests cannot import conftest under ``--import-mode=importlib``)."""
    return emulated_hardware_example


@functools.cache
def _emulated_station_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_modulation_emulated_station", MODULATION / "test_emulated_station.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def emulated_station() -> ModuleType:
    """tests/modulation/test_emulated_station.py as a module (defined there, beside the acceptance test that
    describes it; under ``--import-mode=importlib`` a test module cannot import another): ``StalledLog``
    (C1's randomness stalled at frame ``STALL_FROM`` until ``N_STALL`` frames went out dark), ``DURATION``
    and the station builder."""
    pytest.importorskip("pulsestreamer")
    return _emulated_station_module()


@pytest.fixture
def emulated_pair_station(emulated_station: ModuleType, tmp_path: Path) -> Any:
    """``emulated_pair_station(n_clients=2, per_client_markers=False, emulated_detectors=True)`` → the station file
    (in ``tmp_path``): the example emulated-hardware station cut to a chain of ``n_clients`` clients on a short
    loop, ideal detectors (the Eos driver on its emulated controller, or simulated roles), emulators on fresh
    loopback addresses."""
    return functools.partial(emulated_station.emulated_pair_station, tmp_path)
