"""The acquire use case on its own (Qt-free, no CLI): ``labqfl.app.acquire.acquire`` (open, arm,
stream with progress, record, safe state, close) and :class:`Acquisition` (the recipe the GUI's
acquisition thread and ``labqfl run`` stream through), and that the front ends hold no copy of it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from labqfl.app import acquire as acquire_module
from labqfl.app.acquire import AcquireOptions, Acquisition, acquire
from labqfl.app.station import open_station
from labqfl.config import StationConfig, load_station_config
from labqfl.errors import ConfigError, DataFormatError, InstrumentError
from labqfl.station import open_recording

ROOT = Path(__file__).resolve().parents[2]
DURATION = 0.004


def _seeded(epoch: int = 11) -> StationConfig:
    """The default station with seeded clients and a fixed QRNG epoch (reproducible tags)."""
    data = load_station_config().model_dump(mode="json")
    data["simulation"]["qrng_epoch_base"] = epoch
    for c in data["clients"]:
        c["randomness"] = "seeded"
    return StationConfig.model_validate(data)


def test_acquire_records_reports_and_calls_progress_for_every_block(tmp_path: Path) -> None:
    cfg = load_station_config()
    options = AcquireOptions(duration_s=DURATION, out=tmp_path / "rec.h5", data_dir=tmp_path / "data")
    calls: list[tuple[int, int]] = []
    result = acquire(cfg, options, progress=lambda k, n: calls.append((k, n)))
    n = options.n_blocks(cfg)
    assert calls == [(k, n) for k in range(1, n + 1)]
    d = result.as_dict()
    assert list(d) == ["station", "duration_s", "acquisition_id", "out", "client_randomness", "n_tags", "wall_s",
                       "speed_x_real_time", "count_rates_hz", "pairs", "modulation", "note"]
    assert d["out"] == str(tmp_path / "rec.h5") and d["acquisition_id"].startswith(f"{cfg.name}/")
    assert set(d["count_rates_hz"]) == {"sync", "D0", "D1"} and d["count_rates_hz"]["D0"] > 0
    assert d["n_tags"] == round(sum(d["count_rates_hz"].values()) * DURATION)
    assert set(d["pairs"]) == {f"{a}-{b}" for a, b in cfg.pairs()}
    rec = open_recording(tmp_path / "rec.h5")
    try:
        assert rec.n_tags == d["n_tags"] and rec.duration_s == pytest.approx(DURATION)
    finally:
        rec.close()


def test_acquire_arms_every_role_and_leaves_the_station_safe_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labqfl acquire` used to stream without arming (on hardware: laser off, detectors unarmed)."""
    opened: list[Any] = []

    def disarmed_station(cfg: StationConfig, *, base_dir: Path | None = None) -> Any:
        st = open_station(cfg, base_dir=base_dir)
        st.laser.output_enabled = False  # as a real station opens: emission off
        st.detector("D0").enabled = False
        opened.append(st)
        return st

    monkeypatch.setattr(acquire_module, "open_station", disarmed_station)
    result = acquire(load_station_config(), AcquireOptions(duration_s=DURATION))
    assert {"laser.output_enabled=True", "D0.enabled=True"} <= set(result.armed)
    assert result.count_rates_hz["D0"] > 1e4  # light reached the detectors
    (st,) = opened
    assert st.closed and not st.laser.output_enabled and not st.detector("D0").enabled


def test_acquire_that_fails_midway_closes_the_recording_incomplete_and_the_station(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []

    def failing_station(cfg: StationConfig, *, base_dir: Path | None = None) -> Any:
        st = open_station(cfg, base_dir=base_dir)
        real = st.time_tagger.stream

        def stream(duration_s: float, block_duration_s: float | None = None) -> Any:
            blocks = real(duration_s, block_duration_s)  # the acquisition starts at once, as the tagger's does

            def one_then_lost() -> Any:
                yield next(blocks)
                raise InstrumentError("time_tagger: USB link lost (test)")
            return one_then_lost()

        st.time_tagger.stream = stream
        opened.append(st)
        return st

    monkeypatch.setattr(acquire_module, "open_station", failing_station)
    out = tmp_path / "rec.h5"
    with pytest.raises(InstrumentError, match="USB link lost"):
        acquire(load_station_config(), AcquireOptions(duration_s=0.05, out=out, data_dir=tmp_path))
    assert opened[0].closed and not opened[0].laser.output_enabled
    with pytest.raises(DataFormatError, match="incomplete"):
        open_recording(out)


def test_acquisition_counts_segments_windows_and_ends_safe() -> None:
    cfg = _seeded()
    with open_station(cfg) as station:
        station.laser.output_enabled = False
        with Acquisition(station) as acq:
            assert "laser.output_enabled=True" in acq.armed and station.laser.output_enabled
            bs = acq.block_s
            blocks = acq.start(2.5 * bs)  # the last block is partial: counted up to the duration
            epoch = station.time_tagger.acquisition_epoch
            seen = list(blocks)
            assert len(seen) == acq.n_blocks == 3 and acq.t_s == pytest.approx(2.5 * bs)
            assert acq.n_tags == sum(len(b) for b in seen) == sum(acq.counts.values())
            span, clicks = acq.take_window()
            assert span == pytest.approx(2.5 * bs) and set(clicks) == {"sync", "D0", "D1"}
            assert sum(clicks.values()) == acq.n_tags
            assert acq.take_window() == (0.0, dict.fromkeys(clicks, 0))
            open_ended = acq.start()  # a second segment: a new acquisition of the tagger
            assert station.time_tagger.acquisition_epoch == epoch + 1
            for k, _ in enumerate(open_ended, start=1):
                if k == 2:
                    break
            open_ended.close()
            assert acq.segment_t_s == pytest.approx(2 * bs) and acq.t_s == pytest.approx(4.5 * bs)
            assert acq.take_window()[0] == pytest.approx(2 * bs)  # the window restarted with the segment
        assert acq.safe_failures == {} and not station.laser.output_enabled
    assert acq.safe_state() is None  # the station is closed: nothing more to do


def test_acquire_options_refuse_bad_input_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^duration must be a number of seconds in \(0, 1e\+06\], got -1"):
        AcquireOptions(duration_s=-1.0)
    with pytest.raises(ConfigError, match=r"^duration must be a number of seconds in \(0, 1e\+06\], got 100000000\.0$"):
        AcquireOptions(duration_s=1e8)
    with pytest.raises(ConfigError, match=r"^block must be a number of seconds in \(0, 1e\+06\], got nan"):
        AcquireOptions(duration_s=1.0, block_s=float("nan"))
    with pytest.raises(ConfigError, match=r"^out x\.txt: expected a file name ending in \.h5 or \.hdf5"):
        AcquireOptions(duration_s=1.0, out=Path("x.txt"))
    cfg = load_station_config()
    assert AcquireOptions(duration_s=0.025, block_s=0.01).n_blocks(cfg) == 3


# -- the front ends hold no recipe of their own ----------------------------------------------------
RECIPE_ATTRIBUTES = {"time_tagger", "recorder", "pair_report", "client_logs", "acquisition_id", "stream"}
STATION_IMPORTS = ("labqfl.station", "labqfl.sim_backends", "labqfl.drivers", "labqfl.modulation")


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _names(node: ast.AST) -> set[str]:
    return {n.attr if isinstance(n, ast.Attribute) else n.id
            for n in ast.walk(node) if isinstance(n, ast.Attribute | ast.Name)}


def test_labqfl_acquire_cli_is_argument_parsing_and_rendering_only() -> None:
    tree = ast.parse((ROOT / "labqfl/cli/acquire.py").read_text(encoding="utf-8"))
    imports = _imports(tree)
    assert "labqfl.app.acquire.acquire" in imports
    assert not {i for i in imports if i.startswith(STATION_IMPORTS)}, imports
    assert not _names(tree) & (RECIPE_ATTRIBUTES | {"arm", "safe_state", "channel_counts"})


def test_gui_acquisition_thread_streams_through_the_application_layer() -> None:
    tree = ast.parse((ROOT / "gui/workers/acquisition.py").read_text(encoding="utf-8"))
    for fn in ("_acquire", "_acquire_segment"):
        names = _names(_function(tree, fn))
        assert not names & (RECIPE_ATTRIBUTES - {"stream"} | {"arm_station", "channel_counts", "channel_names"}), fn
    assert "Acquisition" in _names(_function(tree, "_acquire"))
    assert "start" in _names(_function(tree, "_acquire_segment"))
    for path in sorted((ROOT / "gui").rglob("*.py")):  # real or simulated: the Station's business
        bad = {i for i in _imports(ast.parse(path.read_text(encoding="utf-8")))
               if i.startswith(STATION_IMPORTS[:3])}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_labqfl_run_acquires_in_process_through_the_application_layer() -> None:
    tree = ast.parse((ROOT / "labqfl/mainjob.py").read_text(encoding="utf-8"))
    assert "Acquisition" in _names(_function(tree, "_acquire_in_process"))  # _acquire's in-process path (4aaa4ee)
    for fn in ("_acquire", "_acquire_in_process", "_stream_and_distil"):
        names = _names(_function(tree, fn))
        assert not names & {"time_tagger", "arm", "channel_counts", "channel_names", "safe_state"}, fn


def test_an_existing_recording_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`acquire --out EXISTING.h5` replaced a complete recording without a word, and Ctrl-C in such a
    run left the old file truncated to an incomplete one; now refused before the station opens."""
    out = tmp_path / "old.h5"
    out.write_bytes(b"a complete recording of yesterday")

    def no_station(*a: Any, **k: Any) -> Any:
        raise AssertionError("the station must not open")

    monkeypatch.setattr(acquire_module, "open_station", no_station)
    with pytest.raises(ConfigError, match=r"^out .*old\.h5 already exists; refusing to overwrite a recording"):
        acquire(load_station_config(), AcquireOptions(duration_s=DURATION, out=out))
    assert out.read_bytes() == b"a complete recording of yesterday"
    from labqfl.sim_backends.recording import RecordingWriter

    with pytest.raises(DataFormatError, match="already exists; refusing to overwrite"):
        RecordingWriter(out, load_station_config())  # the writer itself never truncates a file either
    assert out.read_bytes() == b"a complete recording of yesterday"


def test_an_interrupted_recording_says_how_much_it_holds_and_distils_on_request(tmp_path: Path) -> None:
    """An interrupted recording said ``duration_s = 0`` and could be read only from Python
    (``allow_incomplete=True``); it now records its whole blocks' duration, and the refusal names
    ``labqfl distill --allow-incomplete``."""
    cfg = _seeded()
    out = tmp_path / "cut.h5"
    calls: list[float] = []

    def progress(done: float, total: float) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        acquire(cfg, AcquireOptions(duration_s=20 * cfg.simulation.block_duration_s, out=out, data_dir=tmp_path),
                progress=progress)
    with pytest.raises(DataFormatError, match=r"interrupted after .* s of data\); `labqfl distill --allow-incomplete`"):
        open_recording(out)
    rec = open_recording(out, allow_incomplete=True)
    try:
        assert not rec.complete and len(rec.block_end) == 3
        assert rec.duration_s == pytest.approx(3 * cfg.simulation.block_duration_s)
    finally:
        rec.close()
