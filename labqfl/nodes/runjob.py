"""``labqfl run --nodes``: the main job's acquire+distil phase across node processes, and its
training over the FL server node and one SuperNode per client (:func:`train_over_nodes`), in
segments of rounds between which the job waits for key (top-ups: :func:`acquire_over_nodes` again).

:func:`acquire_over_nodes` starts the network of one machine with
:class:`~labqfl.nodes.launch.LocalNetwork` (throwaway certificates, loopback, optics + detector +
one process per client), with every client's data folder set to the job's data directory
(``client_data``), so each client process writes its key store ``<data_dir>/keystore/<Ci>.sqlite``
exactly where the in-process pipeline writes it and where training draws the pads. It runs one
acquisition → distillation (:func:`~labqfl.nodes.launch.run_acquisition`, tagged with the run's
ID so the stored blocks carry it as the in-process ones do), stops every node with SIGTERM and
checks their exit codes — on success, on failure and on Ctrl-C alike.

The job's own process opens the key stores only before the nodes start (the authentication
check and the "before" accounting) and after they exited (the "after" accounting); while they
run, each store is written by its own client process only.

What the result holds is what the in-process phase gives ``metrics.json`` (per pair
:class:`~labqfl.qkd.pipeline.PairResult` as a dict with ``status``/``qber_x``, the count-rate
series, the per-pair timeline) plus the path and the nodes' start-up times. Granularity differs
where the nodes expose less: the count-rate series has a point per second of acquisition (the detector's
per-channel tag counts per :data:`~labqfl.nodes.detector.COUNT_BIN_S`, not per ``timeline_interval_s``) and
the timeline one entry per pair (Ci's totals: sifted rate, X test QBER), where the in-process path samples
both every ``timeline_interval_s``.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from labqfl.config import StationConfig
from labqfl.log import get_logger
from labqfl.nodes.common import NodeError

log = get_logger(__name__)

__all__ = ["NodesAcquisition", "NodesTraining", "acquire_over_nodes", "auth_starved_pairs", "check_pairs_authenticated",
           "pairs_needing_preshare", "refuse_unshared_auth", "shared_auth_bits_now", "station_for_nodes",
           "train_over_nodes"]

#: progress(phase, done, total, message), as :data:`labqfl.mainjob.ProgressFn`
ProgressFn = Callable[[str, float, float, str], None]


@dataclass
class NodesAcquisition:
    """One acquisition → distillation over node processes (no key bit in it)."""

    acquisition_id: str
    #: per pair: :meth:`PairResult.as_dict` as Ci's node reports it, plus ``status`` and ``qber_x``
    pairs: dict[str, dict[str, Any]]
    count_rate_series: dict[str, Any]
    timeline: list[dict[str, Any]]
    #: wall time of acquisition + distillation (after start-up, before the stop) [s]
    wall_s: float
    #: {"warm_jit_s", "total_s", "nodes": {name: seconds from spawn to its listening line}}
    startup_s: dict[str, Any] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    stop_s: float = 0.0
    #: per client streaming to a pattern generator: frames, played, lost, late, error (its node's
    #: ``ClientStreams.summary``, as ``acquisition.modulation`` of the in-process path)
    modulation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path_metrics(self) -> dict[str, Any]:
        """``metrics.json``'s ``acquisition`` entry for this path."""
        out = {"path": "nodes", "startup_s": self.startup_s, "stop_s": round(self.stop_s, 3),
               "exit_codes": self.exit_codes, "acquisition_wall_s": round(self.wall_s, 3),
               "detector": {k: self.detector[k] for k in ("slots", "tags", "clicks", "blocks", "dropped",
                                                          "tagger_overflows", "tagger_missed_events")
                            if k in self.detector}}
        if self.detector.get("slotting"):  # the detector's slotting counters by cause (as in process)
            out["slotting"] = json.loads(str(self.detector["slotting"]))
        if self.modulation:
            out["modulation"] = self.modulation
        return out


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the nodes run, SIGTERM to the job's process raises :class:`KeyboardInterrupt` (as
    Ctrl-C does), so the job stops every node it started and records itself interrupted instead
    of dying with its nodes left running: :func:`labqfl.station.sigterm_as_interrupt`, so only the
    first SIGTERM raises and another one while the nodes are being stopped is logged and ignored (a
    second SIGTERM used to break off the stop before the optics node got its own, which was left
    running). Only in the main thread (where Python delivers signals); the previous handler is
    restored afterwards."""
    from labqfl.station import sigterm_as_interrupt

    with sigterm_as_interrupt():
        yield


P = ParamSpec("P")
R = TypeVar("R")


def _sigterm_stops_nodes(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` under :func:`terminate_as_interrupt`."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with terminate_as_interrupt():
            return fn(*args, **kwargs)
    return wrapper


def station_for_nodes(cfg: StationConfig, base_dir: Path | None) -> str:
    """The station TOML the job's node processes load from their temporary folder: ``cfg`` with every
    role's relative pyvisa-sim file (``visa_library = "devices/my.yaml@sim"``, relative to the station
    file's folder ``base_dir``, else the working directory, as in process) made absolute, so the nodes
    that open those roles find it (docs/instruments.md)."""
    from labqfl.config import station_to_toml_dict
    from labqfl.serialize import dump_toml

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            lib = node.get("visa_library")
            if isinstance(lib, str) and lib.endswith("@sim") and lib != "@sim" and not lib.startswith("@sim:"):
                path = Path(lib[: -len("@sim")]).expanduser()
                if not path.is_absolute():
                    node["visa_library"] = f"{((base_dir or Path.cwd()) / path).resolve()}@sim"
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    d = station_to_toml_dict(cfg)
    fix(d)
    return f"# {cfg.name}: the station of a labqfl run, for its node processes\n" + dump_toml(d)


def _reconcile_pairs(cfg: StationConfig, data_dir: Path, settings: Any) -> dict[str, Any]:
    """Every pair's :func:`~labqfl.nodes.preshared.reconcile_pair` in ``data_dir`` (no node may run): a
    pre-shared delivery under way kept, a pre-shared block one end holds alone retired there."""
    from labqfl.keystore import KeyStore
    from labqfl.nodes.preshared import reconcile_pair

    out = {}
    for a, b in cfg.pairs():
        with KeyStore.for_node(a, data_dir) as sa, KeyStore.for_node(b, data_dir) as sb:
            out[f"{a}-{b}"] = reconcile_pair(f"{a}-{b}", sa, sb, Path(data_dir), Path(data_dir))
    return out


def pairs_needing_preshare(cfg: StationConfig, data_dir: Path, settings: Any) -> list[str]:
    """Pairs whose two stores cannot pay for a first block's authentication from bits both ends hold
    (what the in-process Distiller bootstraps with a simulated pre-shared block,
    ``DistillSettings.bootstrap_auth``). Each pair is reconciled first (:func:`_reconcile_pairs`): a
    pre-shared block held at one end only (a client killed before it imported its copy) is retired at
    that end, never used, and counts for nothing; one the other end still has to import counts."""
    from labqfl.qkd.pipeline import _auth_bits_per_block

    need = _auth_bits_per_block(settings.auth_lanes, first=True)
    return [p for p, st in _reconcile_pairs(cfg, data_dir, settings).items()
            if not st.pending and not st.malformed and st.shared_bits < need]


def _unshared_auth(short: Mapping[str, tuple[int, str]], need: int) -> str:
    """The refusal of a run without the bootstrap: per pair (shared bits, what reconciling found)."""
    return ("; ".join(f"pair {p}: its two key stores share {bits} authentication bits, a first block needs {need}"
                      + (f" ({what})" if what else "") for p, (bits, what) in short.items())
            + " — load a pre-shared secret into both stores (labqfl keys preshare) or drop --no-auth-bootstrap")


def check_pairs_authenticated(cfg: StationConfig, data_dir: Path, settings: Any) -> None:
    """Without the bootstrap (``--no-auth-bootstrap``): every pair's stores must share the bits of a first
    block's authentication; else one :class:`NodeError` naming each such pair, before any node starts."""
    from labqfl.qkd.pipeline import _auth_bits_per_block

    need = _auth_bits_per_block(settings.auth_lanes, first=True)
    short = {p: (st.shared_bits, st.describe()) for p, st in _reconcile_pairs(cfg, data_dir, settings).items()
             if st.shared_bits < need}
    if short:
        raise NodeError(_unshared_auth(short, need))


def _pair_auth_bits(pair: str, stores: Mapping[str, Any], data_dir: Path, deliveries: bool) -> int:
    """:func:`shared_auth_bits_now` of one pair (``stores``: node → open store, or None where it has none)."""
    from labqfl.nodes.preshared import (
        delivery_bits,
        secret_file_block,
        secret_path,
        shared_auth_bits,
    )

    a, b = pair.split("-")
    if stores[a] is not None and stores[b] is not None:
        total = shared_auth_bits(stores[a], stores[b], pair)
    else:
        total = 0
    if deliveries:  # reconcile_pair's "delivery under way": n's secret file names a block the other end holds
        for n, o in ((a, b), (b, a)):
            x = secret_file_block(secret_path(data_dir, n, pair))
            if not x or stores[o] is None or not stores[o].has_block(x):
                continue
            if stores[n] is None or not stores[n].has_block(x):
                total += delivery_bits(stores[o], pair, x)
    return total


def shared_auth_bits_now(cfg: StationConfig, data_dir: Path, *, deliveries: bool) -> dict[str, int]:
    """Per pair: the authentication bits its two key stores in ``data_dir`` share now (free at both ends,
    :func:`~labqfl.nodes.preshared.shared_auth_bits`), read only: no store is made (a missing or empty one
    holds none), no block retired, no secret file destroyed — what :func:`check_pairs_authenticated`
    counts, before a run folder exists (:meth:`labqfl.mainjob.MainJob.preflight`). ``deliveries`` (over
    nodes, whose clients import their secret file at start): a pre-shared delivery under way counts, as
    :func:`~labqfl.nodes.preshared.reconcile_pair` counts it. A one-sided block counts for nothing (it is
    retired before a block is authenticated)."""
    from labqfl.keystore import KeyStore, node_store_path

    stores: dict[str, Any] = {}
    try:
        for n in cfg.client_names:
            p = node_store_path(n, data_dir)
            has = p.is_file() and p.stat().st_size > 0
            stores[n] = KeyStore(p, node=n, create=False) if has else None
        return {f"{a}-{b}": _pair_auth_bits(f"{a}-{b}", stores, data_dir, deliveries) for a, b in cfg.pairs()}
    finally:
        for st in stores.values():
            if st is not None:
                st.close()


def refuse_unshared_auth(cfg: StationConfig, data_dir: Path, *, deliveries: bool, need: int) -> None:
    """Without the bootstrap (``--no-auth-bootstrap``): one :class:`NodeError` naming each pair whose stores
    share fewer than ``need`` authentication bits now (:func:`shared_auth_bits_now`), with nothing made."""
    short = {p: (bits, "") for p, bits in shared_auth_bits_now(cfg, data_dir, deliveries=deliveries).items()
             if bits < need}
    if short:
        raise NodeError(_unshared_auth(short, need))


def auth_starved_pairs(pairs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Pairs that made no key because no block of theirs found authentication key both ends hold
    (pair → the reason); a top-up acquisition cannot help them."""
    from labqfl.nodes.client import AUTH_STARVED

    out = {}
    for p, d in pairs.items():
        reasons = [str(r) for r in d.get("abort_reasons") or [] if AUTH_STARVED in str(r)]
        if reasons and not d.get("final_key_bits"):
            out[p] = reasons[0]
    return out


def _pair_metrics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """As :func:`labqfl.mainjob.distill_pair_metrics`, from the dicts the nodes send."""
    pairs = {}
    for name, d in sorted(results.items()):
        pd = dict(d)
        pd.pop("accepted_blocks", None)  # block IDs: in the stores, not needed in metrics
        reasons = list(pd.get("abort_reasons") or [])
        if pd.get("failed"):
            reasons.append(str(pd["failed"]))
        pd["status"] = "ok" if pd["final_key_bits"] > 0 else ("abort: " + "; ".join(reasons) if reasons else "no key")
        pd["qber_x"] = pd["error_rate"]["X_key"]
        pairs[name] = pd
    return pairs


def _timeline(pairs: dict[str, dict[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    """One entry per pair over the whole acquisition: sifted rate and the X-basis test QBER with the test
    clicks it is over (Ci's totals, ``error_rate_counts``; the nodes report no finer time resolution), so the
    report applies its minimum-clicks rule here too."""
    return [{"pair": name, "t_s": duration_s, "sifted_rate_bps": pd["sifted_bits"] / duration_s,
             "qber": pd["error_rate"].get("X_test"),
             "qber_events": (pd.get("error_rate_counts") or {}).get("X_test")} for name, pd in pairs.items()]


def _series(channel_names: Mapping[int, str], detector: dict[str, Any], duration_s: float) -> dict[str, Any]:
    """The count-rate series of metrics.json: a point per :data:`~labqfl.nodes.detector.COUNT_BIN_S` of
    acquisition (the detector's ``channel_counts_series``; the last bin may be shorter), each channel's tags
    in the bin per second, at the bin's end; one point over the whole acquisition (``channel_counts``) from a
    detector that reports no series."""
    series = json.loads(str(detector.get("channel_counts_series") or "{}"))
    if series.get("counts") and series.get("bin_s"):
        width = float(series["bin_s"])
        n = max(1, math.ceil(duration_s / width - 1e-9))
        if n > 1 and duration_s - (n - 1) * width < 0.1 * width:  # a sliver of a last bin joins the one before
            n -= 1
        ends = [(i + 1) * width for i in range(n - 1)] + [duration_s]
        spans = [e - (ends[i - 1] if i else 0.0) for i, e in enumerate(ends)]
        bins = {int(k): [int(x) for x in v] for k, v in series["counts"].items()}

        def rates(ch: int) -> list[float]:
            got = bins.get(abs(ch), [])
            # a tag stamped at (or a hair after) the end falls in the bin past it: count it in the last one
            counts = [sum(got[i:]) if i == n - 1 else (got[i] if i < len(got) else 0) for i in range(n)]
            return [c / sp for c, sp in zip(counts, spans, strict=True)]

        return {"t_s": ends, "rates_hz": {name: rates(ch) for ch, name in channel_names.items()}}
    counts = {int(k): int(v) for k, v in json.loads(str(detector.get("channel_counts") or "{}")).items()}
    return {"t_s": [duration_s],
            "rates_hz": {name: [counts.get(abs(ch), 0) / duration_s] for ch, name in channel_names.items()}}


def _checked_pairs(res: Mapping[str, Any], data_dir: Path) -> dict[str, dict[str, Any]]:
    """The pairs' metrics of a finished acquisition over nodes (the nodes still up), or :class:`NodeError`
    naming what went wrong: a failed pair, a pair whose ends share no authentication key."""
    pairs = _pair_metrics(res["pairs"])
    failed = {p: d["failed"] for p, d in pairs.items() if d.get("failed") or not d.get("done", True)}
    if failed:
        raise NodeError(f"pairs failed over the nodes: {failed}")
    starved = auth_starved_pairs(pairs)
    if starved:  # not key starvation: no acquisition can help until the pair's ends share authentication key
        raise NodeError("; ".join(f"pair {p}: no block could be authenticated ({r})" for p, r in starved.items())
                        + f" — its two key stores share no authentication key (labqfl keys status --data-dir "
                          f"{data_dir}); load a pre-shared secret into both (labqfl keys preshare)")
    return pairs


def _distilled(acq: str, res: Mapping[str, Any], data_dir: Path, channel_names: Mapping[int, str],
               duration_s: float, startup: dict[str, Any]) -> NodesAcquisition:
    """The result of a finished acquisition over nodes (:func:`_checked_pairs`), the nodes still up."""
    pairs = _checked_pairs(res, data_dir)
    return NodesAcquisition(
        acquisition_id=acq, pairs=pairs, count_rate_series=_series(channel_names, res["detector"], duration_s),
        timeline=_timeline(pairs, duration_s), wall_s=float(res["wall_s"]), startup_s=startup,
        detector=dict(res["detector"]),
        modulation={c: d["modulation"] for c, d in res["clients"].items() if d.get("modulation")})


def _check_stopped(codes: Mapping[str, int | None], logs: Path) -> None:
    """:class:`NodeError` when a node did not exit with 0 after SIGTERM."""
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad:
        raise NodeError(f"node processes did not stop cleanly after SIGTERM (exit codes {bad}); logs in {logs}")


@_sigterm_stops_nodes
def acquire_over_nodes(cfg: StationConfig, settings: Any, duration_s: float, *, data_dir: Path,
                       channel_names: Mapping[int, str], run_id: str = "", bootstrap_auth: bool = True, progress: ProgressFn | None = None,
                       on_start: Callable[[str], None] | None = None, log_dir: Path | None = None,
                       timeout_s: float = 900.0, base_dir: Path | None = None,
                       on_distilled: Callable[[NodesAcquisition], None] | None = None) -> NodesAcquisition:
    """Start the nodes, acquire ``duration_s`` seconds and distil into ``data_dir``'s stores, stop them.

    ``settings``: the pipeline's :class:`~labqfl.qkd.pipeline.DistillSettings` (block sizes from
    the block-size rule, engine, ε_sec), handed to every client node. ``bootstrap_auth``: pairs
    whose stores hold too little authentication key get a fresh simulated pre-shared secret
    (delivered into both clients' folders, as ``labqfl node up``); False delivers none (the caller
    checks the stores beforehand). ``channel_names``: tagger channel → name
    (:func:`labqfl.app.station.channel_names`). ``on_start(acquisition_id)`` is called before the acquisition
    starts (the job records it, so an interrupted one is never distilled again). ``log_dir``:
    where the nodes' logs are copied (they hold no key bit and no choice: tests/nodes). ``base_dir``: the
    station file's folder (relative pyvisa-sim paths, :func:`station_for_nodes`). ``on_distilled(result)``
    is called once every pair's key is in the stores, before the nodes are stopped (the job records the
    acquisition as distilled, so a resume after an interruption from there on does not acquire again;
    ``exit_codes`` and ``stop_s`` are not known yet). Raises
    :class:`~labqfl.nodes.common.NodeError` when a node fails to start, a pair failed, or a node
    did not exit with 0 after SIGTERM.
    """
    from labqfl.nodes.launch import LocalNetwork, run_acquisition

    report = progress or (lambda *a: None)
    if bootstrap_auth:
        preshare = pairs_needing_preshare(cfg, data_dir, settings)
    else:
        check_pairs_authenticated(cfg, data_dir, settings)
        preshare = []
    work = Path(tempfile.mkdtemp(prefix="labqfl-nodes-"))
    try:
        station = work / "station.toml"
        station.write_text(station_for_nodes(cfg, base_dir), encoding="utf-8")
        net = LocalNetwork(work, station, settings=settings, client_data=Path(data_dir), preshare=preshare,
                           keep_ca_key=False)
        report("acquire", 0, duration_s, f"starting {len(cfg.client_names) + 2} node processes")
        t0 = time.perf_counter()
        stopped = False
        codes: dict[str, int | None] = {}
        try:
            net.start()
            t_start = time.perf_counter() - t0
            startup = {"warm_jit_s": round(net.warm_jit_s, 3), "total_s": round(t_start, 3),
                       "nodes": {n: round(p.startup_s, 3) for n, p in net.nodes.items() if p.startup_s is not None}}
            acq = f"nodes/{uuid.uuid4()}"
            if on_start is not None:
                on_start(acq)
            report("acquire", 0, duration_s, f"acquiring + distilling over {len(net.nodes)} nodes")
            a = net.addresses()
            res = run_acquisition(cfg.client_names, net.certs, detector=a["detector"], optics=a.get("optics", ""),
                                  clients={c: a[c] for c in cfg.client_names}, duration=duration_s,
                                  timeout=timeout_s, acq=acq, run_id=run_id)
            report("acquire", duration_s, duration_s, "keys distilled into the clients' key stores")
            result = _distilled(acq, res, data_dir, channel_names, duration_s, startup)
            if on_distilled is not None:
                on_distilled(result)
            t_stop = time.perf_counter()
            codes = net.stop()
            stopped = True
            stop_s = time.perf_counter() - t_stop
        finally:
            if not stopped:  # failure or Ctrl-C: SIGTERM every node and wait (a client finishes its block)
                codes = net.stop()
                bad = {n: c for n, c in codes.items() if c != 0}
                if bad:
                    log.warning("nodes stopped after a failure; exit codes %s", bad)
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                for p in net.nodes.values():
                    if p.log_path.is_file():
                        shutil.copyfile(p.log_path, log_dir / p.log_path.name)
        _check_stopped(codes, log_dir or work / "logs")
        result.exit_codes, result.stop_s = codes, stop_s
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)  # throwaway certificates (and the CA key) go with it


# ------------------------------------------------------------------------------------ training
@dataclass
class NodesTraining:
    """Federated training over the server node and one SuperNode per client (no key bit in it)."""

    #: ``FederatedResult.summary()`` as the ServerApp wrote it (``rounds``: the RoundMetrics dicts)
    summary: dict[str, Any]
    #: per Flower round: dropouts, reveal bits, ... (:func:`labqfl.fl.flower.server.flower_summary`)
    flower: list[dict[str, Any]]
    final_params: list[float]
    #: per mask-graph pair: the key-store blocks the pads came from (read after the nodes stopped)
    blocks_used: dict[str, list[str]]
    startup_s: dict[str, Any] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    wall_s: float = 0.0
    stop_s: float = 0.0
    #: one Flower run per segment of rounds between waits for key: first/last round, ``ctl/train`` wall
    segments: list[dict[str, Any]] = field(default_factory=list)
    #: SuperNodes that had exited (their exit code) before the stop: clients lost during training
    exited_before_stop: dict[str, int] = field(default_factory=dict)

    def path_metrics(self) -> dict[str, Any]:
        """``metrics.json``'s ``train.nodes`` entry."""
        return {"path": "nodes", "startup_s": self.startup_s, "stop_s": round(self.stop_s, 3),
                "exit_codes": self.exit_codes, "exited_before_stop": self.exited_before_stop,
                "train_wall_s": round(self.wall_s, 3), "flower": self.flower, "segments": self.segments}


def flower_spec_for(setup: Any, names: list[str], *, data_dir: str = "", job_id: str = "", colluders: int = -1,
                    straggler_timeout_s: float = 0.0) -> Any:
    """The :class:`~labqfl.fl.flower.spec.FlowerSpec` of a :class:`~labqfl.app.training.TrainingSetup`
    (the same local training, quantisation, graph, DP plan, noise model and seeds as in process;
    ``keys="qkd"`` with no key-store folder: every SuperNode uses its own client's). ``names``: the
    station's clients in loop order (any names; the i-th trains data partition i with seed index
    i and the pairs are named in loop order, as the stores name them); ``job_id``: the training job (signed);
    ``colluders``: the clients colluding with the server that the self-mask consistency stage tolerates (signed;
    -1: t − 1, :attr:`~labqfl.fl.flower.spec.FlowerSpec.colluders`; ``labqfl run --colluders``)."""
    from labqfl.errors import ConfigError
    from labqfl.fl.flower.spec import FlowerSpec

    s, sa = setup.settings, setup.secagg
    nm = setup.noise_model
    spec = FlowerSpec(task=s.task, clients=len(names), q=sa.q, rounds=s.rounds, keys="qkd", seed=s.seed,
                      local_epochs=setup.local.epochs, lr=setup.local.lr, batch_size=setup.local.batch_size,
                      clip=float(sa.clip), rounding=sa.rounding, graph=sa.graph if sa.graph == "all" else f"ring-{sa.k}",
                      k=sa.k, min_survivors=sa.min_survivors, self_masks=bool(sa.self_masks),
                      threshold=int(sa.threshold or 0), non_iid=s.non_iid, alpha=s.alpha, digits=s.digits,
                      data_dir=data_dir or (str(s.data_dir) if s.data_dir else ""),
                      samples_per_client=s.samples_per_client if s.samples_per_client is not None else 100,
                      test_size=s.test_size if s.test_size is not None else 400, keystore_dir="",
                      stage_timeout_s=600.0, straggler_timeout_s=float(straggler_timeout_s), node_wait_s=300.0,
                      client_names=",".join(names),
                      dp_epsilon=float(s.dp_epsilon or 0.0), dp_delta=float(s.dp_delta), dp_honest=int(s.dp_honest),
                      dp_clip=float(s.dp_clip or 0.0),
                      noise=_noise_text(nm) if nm is not None else "",
                      shots=int(nm.shots or 0) if nm is not None else 0,
                      shot_grad=nm.shot_grad if nm is not None else "parameter-shift", job_id=job_id,
                      colluders=colluders)
    plan = spec.dp_plan()
    if (plan.as_dict() if plan is not None else None) != (setup.dp_plan.as_dict() if setup.dp_plan is not None else None):
        raise ConfigError("training over nodes: the Flower run's DP plan differs from the in-process one "
                          f"({plan} vs {setup.dp_plan}); check --dp-clip")
    if nm is not None and spec.noise_model() != nm:
        raise ConfigError(f"training over nodes: the noise model {spec.noise_model()} differs from {nm}")
    return spec


def _noise_text(nm: Any) -> str:
    """A :class:`~labqfl.fl.models.noisy.NoiseModel`'s channels as ``--noise`` text."""
    return ",".join(f"{k}={float(getattr(nm, k))!r}" for k in ("depolarizing", "amplitude_damping", "readout")
                    if getattr(nm, k) > 0)


def _mnist_cache(task: str, folder: Path) -> str:
    """For an MNIST task: the embedded subset saved once as ``folder/mnist.npz`` (public data), so
    that every ClientApp and ServerApp process loads it in milliseconds instead of parsing the
    embedded copy; "" otherwise."""
    if not task.startswith("mnist"):
        return ""
    import numpy as np

    from labqfl.fl.datasets.mnist import load_embedded_mnist

    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(folder)


def mask_blocks_used(data_dir: Path, pairs: list[str], since: str) -> dict[str, list[str]]:
    """Per pair: the block IDs of the mask pads its master Ci reserved since ``since`` (UTC ISO
    time), from the ``deliveries`` of Ci's store (refs name blocks; no key bit is read). Called
    only after every node stopped. A delivery record that is not JSON raises one KeyStoreError naming the store,
    the key ID and the column (before: a bare JSONDecodeError)."""
    from labqfl.keystore import KeyStore

    out: dict[str, list[str]] = {}
    for pair in pairs:
        with KeyStore(Path(data_dir) / "keystore" / f"{pair.split('-')[0]}.sqlite", create=False) as store:
            records = store.deliveries_since(pair, since)
        ids = {str(r[0]) for d in records if d["info"].get("use") == "fl-mask" for r in d["refs"]}
        if ids:
            out[pair] = sorted(ids)
    return out


def exited_before_stop(net: Any) -> dict[str, int]:
    """The SuperNodes of ``net`` that have already exited (key → exit code), before it is stopped. The
    server node is not among them: training returned, so it was up."""
    from labqfl.nodes.fl import SERVER

    codes = {k: p.proc.poll() for k, p in net.nodes.items() if k != SERVER}
    return {k: int(c) for k, c in codes.items() if c is not None}


def _check_fl_stopped(codes: Mapping[str, int | None], gone: Mapping[str, int]) -> None:
    """After a training that returned: a SuperNode that had exited before the stop (``gone``) is a client
    the rounds lost (the training tolerated it or it would have failed), recorded and warned about, not a
    failed stop (review s37 F1); every other node must have exited with 0 (:class:`NodeError`)."""
    bad = {n: c for n, c in codes.items() if c != 0 and n not in gone}
    if bad:
        raise NodeError(f"FL node processes did not stop cleanly after SIGTERM (exit codes {bad})")
    if gone:
        log.warning("FL node(s) had exited before the end of training (a dropout): exit codes %s", dict(gone))


#: a segment after the first: its SuperNodes are up, so a client whose setup answer has not come this long after the
#: Flower run's start has died at that start; the run goes on without it, or stops with one line
#: (:attr:`~labqfl.fl.flower.spec.FlowerSpec.missing_ok_after_s`; live nodes answer in seconds)
MISSING_OK_AFTER_S = 60.0


def _clients_lost(net: Any, spec: Any, r: int) -> str:
    """Before the segment from round ``r``: the clients whose SuperNode has exited (lost in an earlier segment),
    comma-separated — the segment's ``absent`` clients, whom its Flower run neither waits for at its start
    (``node_wait_s``, 300 s) nor messages. If the rounds cannot complete without them
    (:func:`~labqfl.fl.flower.server.round_shortfall`), one :class:`NodeError` line names them and what is kept."""
    from labqfl.fl.flower.server import round_shortfall

    codes = {k.removeprefix("supernode-"): c for k, c in exited_before_stop(net).items()}
    if not codes:
        return ""
    lost = [c for c in spec.names if c in codes]
    why = round_shortfall(spec, [c for c in spec.names if c not in lost]) if lost else None
    if why is not None:
        raise NodeError(
            f"training over nodes stopped before round {r}: client(s) {', '.join(lost)} lost during training (SuperNode "
            f"exit code(s) {', '.join(f'{c} {codes[c]}' for c in lost)}), and the rounds cannot go on without them: "
            f"{why}. Rounds 1-{r - 1} are trained and checkpointed (kept); `labqfl run --resume` continues from round "
            f"{r} with every client's node started again")
    return ",".join(lost)


#: before_segment(round) -> the last round of the segment starting there; on_segment(the segment's
#: ServerApp metrics); both called while every FL node is up and idle (no ClientApp draws key)
SegmentFn = Callable[[int], int]
SegmentDoneFn = Callable[[dict[str, Any]], None]


def _train_segments(net: Any, spec: Any, *, start_round: int, init_params: Any, timeout_s: float,
                    before_segment: SegmentFn | None, on_segment: SegmentDoneFn | None,
                    report: ProgressFn) -> dict[str, Any]:
    """Rounds ``start_round``..``spec.rounds`` on the running FL nodes ``net``, one Flower run per
    segment (``first_round``/``last_round`` of the spec, each from the previous one's final
    parameters); returns the merged ServerApp metrics (``rounds`` and ``flower`` of every segment,
    the first segment's initial accuracy, the last one's final parameters, ``wall_s`` summed,
    ``segments``: each segment's first and last round and ``ctl/train`` wall)."""
    import dataclasses

    merged: dict[str, Any] = {"rounds": [], "flower": [], "wall_s": 0.0, "segments": []}
    params = None if init_params is None else [float(x) for x in init_params]
    r = start_round
    while r <= spec.rounds:
        _clients_lost(net, spec, r)  # at once, before a wait for key
        last = spec.rounds if before_segment is None else int(before_segment(r))
        if not r <= last <= spec.rounds:
            raise NodeError(f"training over nodes: segment from round {r} to round {last}; expected a last "
                            f"round in {r}..{spec.rounds}")
        seg = dataclasses.replace(spec, first_round=r, last_round=last, absent=_clients_lost(net, spec, r),
                                  missing_ok_after_s=0.0 if r == start_round else MISSING_OK_AFTER_S)
        report("train", r - 1, spec.rounds, f"training round(s) {r}-{last} of {spec.rounds} over the nodes")
        res = net.train(seg.to_config(), timeout_s, init_params=params)
        merged["rounds"].extend(res.get("rounds") or [])
        merged["flower"].extend(res.get("flower") or [])
        merged["wall_s"] += float(res["wall_s"])
        merged["segments"].append({"first_round": r, "last_round": last, "wall_s": round(float(res["wall_s"]), 3)})
        for k, v in res.items():
            if k not in ("rounds", "flower", "wall_s") and not (k.startswith("initial_") and k in merged):
                merged[k] = v
        params = list(res.get("final_params") or [])
        if on_segment is not None:
            on_segment(res)
        r = last + 1
    return merged


@_sigterm_stops_nodes
def train_over_nodes(cfg: StationConfig, setup: Any, *, data_dir: Path, server_dir: Path,
                     log_dir: Path | None = None, progress: ProgressFn | None = None,
                     timeout_s: float = 3600.0, start_round: int = 1, init_params: Any = None,
                     before_segment: SegmentFn | None = None,
                     on_segment: SegmentDoneFn | None = None, since: str | None = None,
                     job_id: str = "", colluders: int = -1, straggler_timeout_s: float = 0.0) -> NodesTraining:
    """Federated training of ``setup`` (a :class:`~labqfl.app.training.TrainingSetup` whose key
    source is never opened here) across the server node (data folder ``server_dir``) and one
    SuperNode per client with the job's ``data_dir`` (client Ci's pads from
    ``<data_dir>/keystore/<Ci>.sqlite``, drawn by Ci's SuperNode only). Throwaway certificates in a
    temporary folder (deleted afterwards, CA key included). Every process gets SIGTERM at the end,
    on failure and on Ctrl-C (SIGTERM to the job's process counts as Ctrl-C:
    :func:`terminate_as_interrupt`); raises :class:`NodeError` when one does not exit with 0.

    Rounds ``start_round``.. (from ``init_params``, the global parameters after the round before;
    a resumed job) in segments: ``before_segment(r)`` returns the last round the stores hold key
    for from round ``r`` (the job waits for key there, with top-up acquisitions over their own
    node processes, while the FL nodes stay up and idle), ``on_segment`` gets each segment's
    metrics (the job checkpoints). Without ``before_segment``: one Flower run of every round.

    ``blocks_used``: the block IDs of the mask pads reserved since ``since`` (UTC ISO time with
    microseconds, as the stores write it; default: now). A resumed job passes the start of its first
    training over nodes, so the rounds trained before the interruption keep their blocks. ``job_id``: the
    training job, signed with each segment's spec (a resumed job passes the same: ``spec.job_id``), as is
    ``colluders`` (:func:`flower_spec_for`); ``straggler_timeout_s``: the spec's (``labqfl run --straggler-timeout``)."""
    from datetime import UTC, datetime

    from labqfl.nodes.fl import FlNetwork
    from labqfl.planning import station_toml

    report = progress or (lambda *a: None)
    names = list(cfg.client_names)
    work = Path(tempfile.mkdtemp(prefix="labqfl-fl-"))
    try:
        spec = flower_spec_for(setup, names, data_dir=_mnist_cache(setup.settings.task, work), job_id=job_id,
                               colluders=colluders, straggler_timeout_s=straggler_timeout_s)
        spec.secagg()  # a spec the nodes would refuse fails here, before any process starts
        station = work / "station.toml"
        station.write_text(station_toml(cfg), encoding="utf-8")
        net = FlNetwork(work, station, names, Path(data_dir), server_data=Path(server_dir))
        report("train", 0, spec.rounds, f"starting the server node and {len(names)} SuperNodes")
        since = since or datetime.now(UTC).isoformat(timespec="microseconds")
        t0 = time.perf_counter()
        stopped = False
        codes: dict[str, int | None] = {}
        gone: dict[str, int] = {}
        try:
            net.start()
            startup = {"total_s": round(time.perf_counter() - t0, 3),
                       "nodes": {n: round(p.startup_s, 3) for n, p in net.nodes.items() if p.startup_s is not None}}
            res = _train_segments(net, spec, start_round=start_round, init_params=init_params, timeout_s=timeout_s,
                                  before_segment=before_segment, on_segment=on_segment, report=report)
            t_stop = time.perf_counter()
            gone = exited_before_stop(net)
            codes = net.stop()
            stopped = True
            stop_s = time.perf_counter() - t_stop
        finally:
            if not stopped:
                codes = net.stop()
                bad = {n: c for n, c in codes.items() if c != 0}
                if bad:
                    log.warning("FL nodes stopped after a failure; exit codes %s", bad)
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                for key, p in net.nodes.items():
                    if p.log_path.is_file():
                        shutil.copyfile(p.log_path, log_dir / f"fl-{key}.log")
        _check_fl_stopped(codes, gone)
        summary = {k: v for k, v in res.items() if k not in ("flower", "final_params", "wall_s", "segments")}
        report("train", spec.rounds, spec.rounds, "training over the nodes done")
        return NodesTraining(summary=summary, flower=list(res.get("flower") or []),
                             final_params=list(res.get("final_params") or []),
                             blocks_used=mask_blocks_used(Path(data_dir), list(setup.secagg.pairs(names)), since),
                             startup_s=startup, exit_codes=codes, wall_s=float(res["wall_s"]), stop_s=stop_s,
                             segments=list(res["segments"]), exited_before_stop=gone)
    finally:
        shutil.rmtree(work, ignore_errors=True)
