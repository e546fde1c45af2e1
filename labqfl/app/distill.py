"""Distillation as one use case: settings, the nodes' key stores, the acquisition ID, the Distiller.

``labqfl distill`` (recording and ``--live``), ``labqfl run``'s acquire+distil phase and the GUI's
live distillation all go through :class:`DistillSession`::

    settings, plan = distill_settings(cfg, DistillOptions(engine="ldpc"), duration_s, what=..., hint=...)
    with DistillSession(cfg, settings, data_dir=data_dir, run_id=run.name) as session:
        session.check_auth()                      # --no-auth-bootstrap: refuse before any acquisition
        source = TagSource.from_acquisition(acq, duration_s)   # or TagSource.from_recording(rec, cfg, data_dir)
        results = session.run(source, on_block=...)            # push every tag block, then finish
    # the key stores are closed here, whatever happened

:meth:`DistillSession.run` is the one loop: the front ends hand it a :class:`TagSource` and
callbacks for what they show (count rates, timeline, live metrics) and never push tag blocks into a
Distiller or finish it themselves (``tests/app/test_front_end_free.py``).

Block IDs derive from the acquisition ID (:func:`labqfl.contracts.types.acquisition_id`), so the same
raw data is never distilled into a store twice (ARCHITECTURE.md "Keys"); every block's
provenance (physical layer, the clients' randomness, protocol, ε) is stamped by the Distiller
from the logs the Station hands out (:mod:`labqfl.provenance`). A recording's keys rest on the station that
acquired it: a station file given for its distillation must agree with the recording's own on the physical
layer and every client's randomness (:func:`check_recording_station`), or a simulated acquisition would be
stamped, stored and served as "hardware" (review s35 F1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig
from labqfl.contracts.types import DEFAULT_ENGINE
from labqfl.errors import AcquisitionRefused, ConfigError


@dataclass(frozen=True)
class DistillOptions:
    """What a user chooses for a distillation (``labqfl distill``/``run`` options, the GUI's panel).

    ``engine``: error correction (:data:`labqfl.contracts.types.ENGINES`); ``block_bits``: sifted bits
    per key block and pair (``None``: the block-size rule, :mod:`labqfl.qkd.blocksize`);
    ``eps_sec``: secrecy parameter of the finite-key analysis (``None``: the pipeline's default);
    ``bootstrap_auth``: False never writes a simulated pre-shared authentication key.
    """

    engine: str = DEFAULT_ENGINE
    block_bits: int | None = None
    eps_sec: float | None = None
    bootstrap_auth: bool = True

    def __post_init__(self) -> None:
        from labqfl.contracts.types import ENGINES

        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.block_bits is not None and self.block_bits <= 0:
            raise ConfigError(f"block_bits must be > 0 (or None for the block-size rule), got {self.block_bits}")
        if self.eps_sec is not None and not 0 < self.eps_sec < 1:
            raise ConfigError(f"eps_sec must be in (0, 1), got {self.eps_sec}")


def distill_settings(cfg: StationConfig, options: DistillOptions, duration_s: float | None = None, *,
                     what: str = "the data", hint: str = "force a block size with --block-bits") -> tuple[Any, Any]:
    """The pipeline's :class:`~labqfl.qkd.pipeline.DistillSettings` for ``options`` and the
    :class:`~labqfl.qkd.blocksize.BlockPlan` they came from (``None`` with a forced block size).

    ``duration_s``: the acquisition's length (``None``: an open-ended stream). With the block-size
    rule, data too short for one positive-key block per pair raises :class:`ConfigError`
    ``"<shortfall of what>; <hint>"`` (no hint: the shortfall alone) before anything is opened.
    """
    from labqfl.qkd.pipeline import DistillSettings

    kw: dict[str, Any] = {}
    if options.eps_sec is not None:
        from labqfl.qkd.estimation import SecurityParameters

        kw["params"] = SecurityParameters(eps_sec=options.eps_sec)
    if options.block_bits is not None:
        return DistillSettings(block_bits=options.block_bits, engine=options.engine,
                               bootstrap_auth=options.bootstrap_auth, **kw), None
    from labqfl.qkd.blocksize import plan_blocks

    tail = f"; {hint}" if hint else ""
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"{what} holds no data{tail}")
    plan = plan_blocks(cfg, duration_s, **kw)
    if not plan.sufficient:
        raise ConfigError(f"{plan.shortfall(what)}{tail}")
    return plan.distill_settings(engine=options.engine, bootstrap_auth=options.bootstrap_auth, **kw), plan


def check_recording_station(recording: Any, cfg: StationConfig) -> None:
    """Refuse ``cfg`` for distilling ``recording`` when the provenance its keys would be stamped with
    (:func:`labqfl.provenance.station_physical_layer`, each client's randomness) differs from what the
    recording's own station says: the key's physical layer is the one the acquisition ran on, whatever
    file is given later. ConfigError names the first difference."""
    from labqfl.provenance import station_physical_layer

    own, given = station_physical_layer(recording.config), station_physical_layer(cfg)
    tail = ("; a recording's keys rest on the station that acquired it: leave out the station file (the recording's "
            "own is used) or give one with the same instrument roles and client randomness")
    if own != given:
        raise ConfigError(f"the station file's physical layer is {given!r} but recording {recording.path} was acquired "
                          f"on a {own} station{tail}")
    recorded = set(recording.client_names)
    for c in cfg.client_names:
        if c in recorded and (want := recording.client_randomness(c)) != (got := cfg.client(c).randomness):
            raise ConfigError(f"the station file gives client {c} randomness {got!r} but recording {recording.path} "
                              f"holds its {want} choices{tail}")
        if c in recorded:
            _check_recorded_encoding(recording, cfg, c)


def _check_recorded_encoding(recording: Any, cfg: StationConfig, c: str) -> None:
    """Refuse a station file whose client ``c`` has other intensities, intensity probabilities or basis_x_prob
    than the recording says were sent (its ``/clients/<c>`` attributes, which ``Recording.open`` checked against
    its own config): the decoy-state bound (labqfl.qkd.estimation) takes the μ and their probabilities from the
    file given, so a key would be stamped with an ε_sec resting on intensities never sent (review s36 input F3)."""
    own = recording.config.client(c) if c in recording.config.client_names else None
    if own is None:
        return
    given = cfg.client(c)
    for field in ("intensities", "intensity_probs", "basis_x_prob"):
        want, got = getattr(own, field), getattr(given, field)
        w = list(want) if isinstance(want, list | tuple) else [want]
        g = list(got) if isinstance(got, list | tuple) else [got]
        if len(w) != len(g) or not all(math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0) for x, y in zip(w, g, strict=True)):
            raise ConfigError(f"the station file gives client {c} {field} = {got!r} but recording {recording.path} "
                              f"was acquired with {want!r}; the decoy-state bound must use what was sent: leave out the "
                              "station file (the recording's own is used) or give one with the recorded intensities, "
                              "intensity_probs and basis_x_prob")


def recording_inputs(recording: Any, cfg: StationConfig, data_dir: Path | None) -> tuple[dict[str, Any], str | None]:
    """(each client's modulation log, the acquisition ID) of a recording (:func:`labqfl.station.open_recording`):
    seeded clients' logs from the recording, CSPRNG clients' private logs from their folders under
    ``data_dir`` (``FileNotFoundError`` when one is not on this machine). ``cfg`` is checked against the
    recording's own station first (:func:`check_recording_station`)."""
    from labqfl.contracts.types import acquisition_id

    check_recording_station(recording, cfg)
    logs = {c: recording.client_log(c, data_dir) for c in cfg.client_names}
    _check_played_frames(recording, logs)
    acq = acquisition_id(recording.config, recording.epoch) if recording.epoch >= 0 else None
    return logs, acq


def _check_played_frames(recording: Any, logs: Mapping[str, Any]) -> None:
    """Refuse (ConfigError) a recording in which a client its own station puts on a pattern generator has no
    played-frames record (``/clients/<C>/played_frames``; review s37 lab3 L1). Such a client streamed its log to
    the generator while the acquisition ran, and a frame the generator did not play in time (an underflow) did not
    carry the logged states: without the record every frame would be sifted as played, and the key's security
    analysis (decoy bound, phase-error estimate: docs/protocol.md) assumes each slot it uses carried its logged
    state. The record cannot be rebuilt afterwards (only the generator knew, while it played)."""
    from labqfl.modulation import PlayedChoiceLog

    own = recording.config
    missing = [c for c, lg in logs.items()
               if c in own.client_names and own.client(c).pattern_generator is not None
               and not isinstance(lg, PlayedChoiceLog)]
    if missing:
        who = f"client{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        raise ConfigError(
            f"recording {recording.path}: {who} streamed to a pattern generator but the recording holds no "
            f"played-frames record for {'them' if len(missing) > 1 else 'it'} (/clients/{missing[0]}/played_frames"
            f"{' …' if len(missing) > 1 else ''}), so frames a generator lost would be sifted with choices that were "
            "never sent, and the key's security analysis assumes every slot it uses carried its logged state; nothing "
            "was distilled. The record cannot be rebuilt: acquire again with `labqfl acquire --out` (it stores each "
            "client's played frames, also when the acquisition is interrupted or refused)")


@dataclass
class TagSource:
    """What a distillation reads: the tag blocks, each client's own modulation log, the ID of the
    acquisition the blocks come from (block IDs derive from it; ``None`` for a recording without an
    epoch) and its length in seconds (``None``: an open-ended stream, whose slot count the caller
    gives :meth:`DistillSession.run`)."""

    blocks: Iterable[Any]
    logs: Mapping[str, Any]
    acquisition_id: str | None
    duration_s: float | None = None

    @classmethod
    def from_recording(cls, recording: Any, cfg: StationConfig, data_dir: Path | None) -> TagSource:
        """A recording's blocks, logs and acquisition ID (:func:`recording_inputs`; ``FileNotFoundError``
        when a CSPRNG client's private log is not on this machine)."""
        logs, acq_id = recording_inputs(recording, cfg, data_dir)
        return cls(recording.blocks(), logs, acq_id, float(recording.duration_s))

    @classmethod
    def from_acquisition(cls, acquisition: Any, duration_s: float | None = None) -> TagSource:
        """Start ``acquisition`` (:class:`labqfl.app.acquire.Acquisition`, armed) for ``duration_s``
        and take the clients' logs and the acquisition ID the Station hands out for it
        (:meth:`labqfl.station.Station.client_logs`, :meth:`~labqfl.station.Station.acquisition_id`)."""
        blocks = acquisition.start(duration_s)
        return cls.from_station(acquisition.station, blocks, duration_s)

    @classmethod
    def from_station(cls, station: Any, blocks: Iterable[Any], duration_s: float | None = None) -> TagSource:
        """``blocks`` of the acquisition the Station's time tagger has just started, with the clients'
        logs and the acquisition ID the Station hands out for it (the GUI's stream, relayed between threads)."""
        return cls(blocks, station.client_logs(), station.acquisition_id(), duration_s)


def _stored_line(stored: Mapping[str, int]) -> str:
    """What a refused live acquisition left in the key stores: the key blocks stored from it, per pair."""
    if not stored:
        return "no key block had been stored from it"
    return "key blocks stored from it before it ended: " + ", ".join(f"{p} {n}" for p, n in sorted(stored.items()))


class DistillSession:
    """The nodes' key stores (one per client, ``<data_dir>/keystore/<node>.sqlite``) and, once
    :meth:`start` ed, the :class:`~labqfl.qkd.pipeline.Distiller` writing into them.

    The stores are opened here and closed by :meth:`close` (or the ``with`` block), on success
    and on failure alike. ``run_id`` names the run folder in every stored block's metadata.
    """

    def __init__(self, cfg: StationConfig, settings: Any, *, data_dir: Path | None = None, run_id: str = "",
                 plan: Any = None) -> None:
        from labqfl.keystore import KeyStore
        from labqfl.keystore.pairs import retire_one_sided_blocks
        from labqfl.qkd.pipeline import KeyStoreSink

        self.cfg = cfg
        self.settings = settings
        self.plan = plan
        self.stores: dict[str, Any] = {}
        try:
            for n in cfg.client_names:
                self.stores[n] = KeyStore.for_node(n, data_dir)
        except BaseException:
            self.close()
            raise
        # a block a killed process stored at one end only is retired at that end before the pair is used
        self.sink = KeyStoreSink(self.stores, run_id=run_id, prepare_pair=retire_one_sided_blocks)
        self.distiller: Any = None
        self.acquisition_id: str | None = None

    @classmethod
    def open(cls, cfg: StationConfig, options: DistillOptions, duration_s: float | None = None, *,
             data_dir: Path | None = None, run_id: str = "", what: str = "the data",
             hint: str = "force a block size with --block-bits") -> DistillSession:
        """Settings from :func:`distill_settings` (refusing too little data first), then the stores."""
        settings, plan = distill_settings(cfg, options, duration_s, what=what, hint=hint)
        return cls(cfg, settings, data_dir=data_dir, run_id=run_id, plan=plan)

    @property
    def run_id(self) -> str:
        return str(self.sink.run_id)

    @run_id.setter
    def run_id(self, value: str) -> None:
        self.sink.run_id = value

    def check_auth(self) -> None:
        """Without ``bootstrap_auth``: raise :class:`~labqfl.errors.InsufficientKeyError` now if a
        pair's stores cannot pay for its first block's authentication (before any instrument moves)."""
        if not self.settings.bootstrap_auth:
            from labqfl.qkd.pipeline import check_auth_key

            check_auth_key(self.sink, [f"{a}-{b}" for a, b in self.cfg.pairs()], self.settings)

    def start(self, logs: Mapping[str, Any], acquisition_id: str | None,
              stop: Callable[[], bool] | None = None) -> Any:
        """Build the Distiller for an acquisition: each client's own log and the acquisition's ID;
        ``stop()`` is asked between its stages (:class:`~labqfl.qkd.pipeline.Distiller`)."""
        from labqfl.qkd.pipeline import Distiller

        self.acquisition_id = acquisition_id
        self.distiller = Distiller(self.cfg, dict(logs), self.sink, self.settings, acquisition_id=acquisition_id,
                                   stop=stop)
        return self.distiller

    def distilled_before(self, source: TagSource, total_slots: int) -> list[str]:
        """The pairs every block of which an earlier run of ``source``'s acquisition distilled into these stores
        (:meth:`labqfl.qkd.pipeline.Distiller.distilled_before`), asked before any tag is read: a front end
        refuses such a recording at once (review s38 user F6) without running the distillation itself."""
        return list(self.start(source.logs, source.acquisition_id).distilled_before(total_slots))

    def start_from_station(self, station: Any) -> Any:
        """:meth:`start` with the logs and the ID of the acquisition the Station's time tagger has
        just begun (:meth:`labqfl.station.Station.client_logs`, :meth:`~labqfl.station.Station.acquisition_id`)."""
        return self.start(station.client_logs(), station.acquisition_id())

    def run(self, source: TagSource, *, total_slots: int | Callable[[], int | None] | None = None,
            on_block: Callable[[int, list[Any]], None] | None = None, stop: Callable[[], bool] | None = None,
            on_finish: Callable[[], None] | None = None) -> dict[str, Any] | None:
        """Distil ``source`` into the stores: start the Distiller on its logs and acquisition ID, push
        every tag block (``on_block(k, closed)`` after the k-th, ``closed``: the key blocks it closed),
        then ``on_finish()`` and finish: the last partial block is processed and the per-pair
        results are returned. ``total_slots``: the acquisition's slot count for the finish (a
        callable is asked at the end, for a stream whose length is known only then; default:
        ``source.duration_s`` × the laser's repetition rate). ``stop()`` true ends the run without
        finishing and ``None`` is returned: it is checked before each tag block and before the
        finish, and inside the Distiller between the stages of a key block, so a stop waits for
        one stage, not for the block — the block in progress is abandoned at both ends, nothing of
        it stored (the Distiller's "Stopping"). The stores stay open for :meth:`accounting` until
        :meth:`close`."""
        distiller = self.start(source.logs, source.acquisition_id, stop=stop)

        def stopped() -> bool:
            if distiller.stopped or (stop is not None and stop()):
                distiller.abandon()
                return True
            return False

        k = 0
        stored: dict[str, int] = {}  # key blocks stored per pair, for the end check's error (review s37 lab3 L9)
        try:
            for block in source.blocks:
                if stopped():
                    break
                closed = self.push(block)
                for r in closed:
                    if r.final_key_bits > 0 and not r.abort:
                        stored[r.pair] = stored.get(r.pair, 0) + 1
                k += 1
                if on_block is not None:
                    on_block(k, closed)
        except AcquisitionRefused as exc:  # the end check refused it: say what it left stored (any other
            # instrument error goes on as it is, its type, fields and cause kept: review s38 lab4 nit)
            raise AcquisitionRefused(f"{exc}; {_stored_line(stored)}") from None
        if stopped():
            return None
        if on_finish is not None:
            on_finish()
        slots = total_slots() if callable(total_slots) else total_slots
        if slots is None and source.duration_s is not None:
            slots = int(round(source.duration_s * self.cfg.laser.rep_rate_hz))
        return dict(self.finish(slots))

    def push(self, block: Any) -> Any:
        return self._running().push(block)

    def finish(self, total_slots: int | None = None) -> Any:
        return self._running().finish(total_slots)

    def _running(self) -> Any:
        if self.distiller is None:
            raise ConfigError("distillation not started: call start() or start_from_station() first")
        return self.distiller

    def provenance(self) -> dict[str, Any]:
        """What the key blocks this run stored (their ``run_id``) rest on: per pair
        :func:`labqfl.provenance.run_provenance` (as ``labqfl run``'s metrics; the pair's pre-shared
        blocks included: where its authentication started), the distilled blocks by physical layer/randomness
        over all pairs, the authentication refills stored with them (``auth_refill_blocks``, one per block), and the weakest storing pair's statement (``keys status``'s functions)."""
        from labqfl.provenance import run_provenance, weakest_summary

        pairs = {f"{a}-{b}": run_provenance(self.stores[a], f"{a}-{b}", self.run_id) for a, b in self.cfg.pairs()}
        stored = [p for p in pairs.values() if p["blocks"] or p["unrecorded_blocks"]]
        blocks: dict[str, int] = {}
        for p in stored:
            for label, n in p["blocks"].items():
                blocks[label] = blocks.get(label, 0) + n
        w = weakest_summary(stored)
        return {"pairs": pairs, "blocks": dict(sorted(blocks.items())),
                "auth_refill_blocks": sum(p.get("auth_refill_blocks", 0) for p in pairs.values()),
                "security": w["security"] if w is not None else "no key block stored: nothing is claimed",
                "information_theoretic": (it := bool(stored) and all(p["information_theoretic"] for p in stored)),
                "information_theoretic_condition": w.get("information_theoretic_condition") if it and w else None}

    def accounting(self) -> dict[str, Any]:
        """Each node store's accounting (bits available and consumed per pair and purpose)."""
        return {n: st.accounting() for n, st in self.stores.items()}

    def close(self) -> None:
        for st in self.stores.values():
            st.close()

    def __enter__(self) -> DistillSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DistillOptions", "DistillSession", "TagSource", "check_recording_station", "distill_settings",
           "recording_inputs"]
