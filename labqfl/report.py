"""Run report: PNG plots and a self-contained ``report.html`` built from a run's ``metrics.json``.

The report reads only the documented metrics schema (``docs/metrics.md``); sections whose data
is absent are left out rather than drawn empty. Plots are written to ``plots/`` in the run folder
and embedded in the HTML as base64 so the file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labqfl.contracts.types import MIN_TEST_CLICKS as _MIN_TEST_CLICKS  # noqa: E402
from labqfl.runs import RunRecord  # noqa: E402

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem} td,th{border:1px solid #ccd;padding:.25rem .6rem;text-align:right}
th{background:#f1f3f8} td:first-child,th:first-child{text-align:left} .muted{color:#667} img{max-width:100%}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.6rem;background:#e8f0fe;margin-right:.4rem}
.warn{background:#fdecea}
"""


def _legends(fig: Any) -> list[Any]:
    """Every legend drawn on ``fig`` (its axes', twin axes' included, and its own)."""
    return [leg for ax in fig.axes if (leg := ax.get_legend()) is not None] + list(fig.legends)


def _fit_legends(fig: Any, tries: int = 3) -> None:
    """Grow ``fig`` until every legend lies inside it, laying it out again each time. Review s40 user MED-1: the
    key-pools legend was 1000 px wide in a 770 px figure; ``tight_layout`` squeezed the axes into the middle and
    ``savefig`` cut the legend's ends. A legend already inside the figure (every plot of the default station's run)
    leaves the figure as it is."""
    for _ in range(tries):
        renderer = fig.canvas.get_renderer()
        fb = fig.bbox
        out = [leg.get_window_extent(renderer) for leg in _legends(fig)]
        grow_w = max([0.0] + [max(fb.x0 - b.x0, 0.0) + max(b.x1 - fb.x1, 0.0) for b in out])
        grow_h = max([0.0] + [max(fb.y0 - b.y0, 0.0) + max(b.y1 - fb.y1, 0.0) for b in out])
        if grow_w <= 0.5 and grow_h <= 0.5:  # within half a pixel
            return
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + (grow_w + 8) / fig.dpi if grow_w > 0.5 else w,
                            h + (grow_h + 8) / fig.dpi if grow_h > 0.5 else h)
        fig.tight_layout()


def _fig(path: Path, draw: Callable[[Any], None], figsize: tuple[float, float] = (7.0, 3.6)) -> Path:
    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    draw(ax)
    ax.grid(alpha=0.3)
    with warnings.catch_warnings():  # a legend wider than the figure: _fit_legends grows it and lays it out again
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout()
    _fit_legends(fig)
    fig.savefig(path)
    plt.close(fig)
    return path


def _one_point(ax: Any, t: list[float]) -> None:
    """An axis whose series have one point each (the whole acquisition's mean, at its end): the time axis from
    0, so the point reads as "over 0..t" rather than sitting alone on a 1-s window around t."""
    if t:
        ax.set_xlim(0.0, 1.05 * max(t))


def _plot_count_rates(run: RunRecord, m: dict[str, Any], plots: dict[str, Path]) -> None:
    """Detector count rates over the acquisition. Adds to ``plots`` what the metrics allow. A series of one
    point (labqfl run over nodes: one mean over the acquisition) is drawn as a marker, not an invisible line."""
    acq = m.get("acquire") or {}
    series = acq.get("count_rate_series")
    if series and series.get("t_s"):
        single = len(series["t_s"]) < 2

        def draw_rates(ax: Any) -> None:
            for ch, rates in series["rates_hz"].items():
                ax.plot(series["t_s"], [r / 1e6 for r in rates], "o" if single else "-", ms=6, label=ch)
            ax.set_xlabel("time [s]")
            ax.set_ylabel("count rate [MHz]")
            if single:
                _one_point(ax, series["t_s"])
                ax.set_title(f"Detector count rates, mean over the {series['t_s'][0]:g} s acquisition (one point)")
            else:
                ax.set_title("Detector count rates")
            ax.legend()
        plots["Count rates"] = _fig(run.plot_path("count_rates.png"), draw_rates)


#: Fewest test clicks a timeline point of the test-data error rate is drawn from (the tables' rule)
MIN_TEST_CLICKS = _MIN_TEST_CLICKS

#: Title (and section heading) of the plot of the test-data error rate beside the key QBER (``qber.png``).
ERROR_RATE_PLOT = "Test-data error rate and key QBER per pair"


def _key_qber(pd: dict[str, Any] | None) -> float | None:
    """A pair's key-cell QBER over the acquisition (``qber_x``, else ``error_rate.X_key``); None: none."""
    if not pd:
        return None
    v = pd.get("qber_x")
    return v if v is not None else (pd.get("error_rate") or {}).get("X_key")


def _error_rate_caption(pairs: list[str], sparse: dict[str, int], keyless: list[str], single: bool = False) -> str:
    """The note under :data:`ERROR_RATE_PLOT`: what the two kinds of line are and what was left out."""
    where = ("Dots: the error rate of the test data (one point per pair: the whole acquisition, the path reports no "
             "timeline)" if single else "Solid: the error rate of the test data")
    text = (f"{where} (both clients in the same basis at equal non-zero intensities, "
            f"the key cell left out){'' if single else ' per timeline interval'}; points from fewer than "
            f"{MIN_TEST_CLICKS} test clicks are "
            "left out. Dashed: each pair's key QBER (both clients in X at the signal intensity) over the acquisition. "
            "The test rate is not the key QBER: where two clients' signal intensities differ only their decoy pulses "
            "are matched, and equal pulses leaving two clients arrive unequal over unequal paths, which lowers the "
            "fringe contrast 2√(AB)/(A+B).")
    if sparse:
        text += " Left out (fewer clicks): " + ", ".join(f"{p} {n} point(s)" for p, n in sorted(sparse.items())) + "."
    if keyless:
        text += " No key QBER (no block processed): " + ", ".join(keyless) + "."
    return text


def _plot_distillation(run: RunRecord, m: dict[str, Any], plots: dict[str, Path],
                       captions: dict[str, str] | None = None) -> None:
    """Test-data error rate beside the key QBER, and sifted/secure key rate, per pair over the acquisition.
    Adds to ``plots`` (and their notes to ``captions``) what the metrics allow."""
    dist = m.get("distill") or {}
    timeline = dist.get("timeline") or []
    if timeline:
        pairs = sorted({e["pair"] for e in timeline})

        final = (m.get("distill") or {}).get("pairs") or {}
        sparse: dict[str, int] = {}
        # one timeline point per pair (the nodes' path: the whole acquisition): dots, and titles that say so
        single = max(sum(e["pair"] == p for e in timeline) for p in pairs) < 2

        def draw_qber(ax: Any) -> None:
            for p in pairs:
                ev = [e for e in timeline if e["pair"] == p and e.get("qber") is not None]
                # the nodes' path reports no count (qber_events None): its one point is the whole acquisition's
                shown = [e for e in ev if e.get("qber_events") is None or e["qber_events"] >= MIN_TEST_CLICKS]
                if len(shown) < len(ev):
                    sparse[p] = len(ev) - len(shown)
                line = ax.plot([e["t_s"] for e in shown], [100 * e["qber"] for e in shown], "o-", ms=5 if single else 3,
                               label=f"{p} test")
                key = _key_qber(final.get(p))
                if key is not None:
                    ax.axhline(100 * key, color=line[0].get_color(), ls="--", lw=1, label=f"{p} key {100 * key:.2f} %")
            ax.set_xlabel("acquisition time [s]")
            ax.set_ylabel("error rate [%]")
            if single:
                _one_point(ax, [e["t_s"] for e in timeline])
            ax.set_title(f"Test-data error rate ({'dots: over the acquisition' if single else 'solid'}, equal bases and "
                         "intensities) and key QBER (dashed)", fontsize=9)
            ax.legend(ncol=3, fontsize=7)

        def draw_rate(ax: Any) -> None:
            for k, p in enumerate(pairs):
                ev = [e for e in timeline if e["pair"] == p]
                line = ax.plot([e["t_s"] for e in ev], [e.get("sifted_rate_bps", 0) / 1e3 for e in ev], "o-", ms=5 if single else 3,
                               label=f"{p} sifted")
                sk = (final.get(p) or {}).get("secure_key_rate_bps")
                if sk is not None and ev:
                    ax.axhline(sk / 1e3, color=line[0].get_color(), ls="--", lw=1,
                               label=f"{p} secure {sk / 1e3:.1f}" if k < 6 else None)
            ax.set_xlabel("acquisition time [s]")
            ax.set_ylabel("key rate [kbit/s]")
            ax.set_yscale("log")
            if single:
                _one_point(ax, [e["t_s"] for e in timeline])
            ax.set_title(f"Sifted key rate per pair ({'dots: over the acquisition' if single else 'solid'}) and final "
                         "secure key rate (dashed)", fontsize=9)
            ax.legend(ncol=2, fontsize=7)

        plots[ERROR_RATE_PLOT] = _fig(run.plot_path("qber.png"), draw_qber)
        if captions is not None:
            captions[ERROR_RATE_PLOT] = _error_rate_caption(pairs, sparse, [p for p in pairs
                                                                            if _key_qber(final.get(p)) is None],
                                                            single)
        plots["Key rate per pair"] = _fig(run.plot_path("key_rate.png"), draw_rate, figsize=(7.0, 4.2))


def _plot_key_pools(run: RunRecord, m: dict[str, Any], plots: dict[str, Path]) -> None:
    """Distilled key per pair against what masks and authentication consumed. Adds to ``plots`` what the metrics allow."""
    keys = (m.get("keys") or {}).get("pairs") or {}
    if keys:
        names = sorted(keys)

        def draw_pools(ax: Any) -> None:
            x = range(len(names))
            distilled = [keys[p].get("distilled_bits", 0) for p in names]
            masks = [keys[p].get("consumed_bits", 0) for p in names]
            # this run's authentication cost beside this run's key (review s38 user F5: the store's lifetime total
            # stood beside it); metrics written before auth_consumed_run_bits have the lifetime total only: so said
            run_auth = all("auth_consumed_run_bits" in keys[p] for p in names)
            auth = [keys[p].get("auth_consumed_run_bits" if run_auth else "auth_consumed_bits", 0) for p in names]
            ax.bar([i - 0.27 for i in x], distilled, width=0.27, label="distilled (this run)")
            ax.bar(list(x), masks, width=0.27, label=fl_consumed_label(m.get("train") or {}))
            ax.bar([i + 0.27 for i in x], auth, width=0.27, label="consumed by authentication " + (
                "(this run)" if run_auth else "(key store, all runs)"))
            ax.set_xticks(list(x), names)
            ax.set_ylabel("bits")
            ax.set_yscale("log")
            ax.set_title("Key pools against consumption")
            # one label a row under the axes: side by side the three were 1000 px wide (review s40 user MED-1)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, fontsize=8, frameon=False)
        plots["Key pools"] = _fig(run.plot_path("key_pools.png"), draw_pools, figsize=(7.0, 4.8))


def fl_consumed_label(train: dict[str, Any]) -> str:
    """The key-pool plot's label for ``keys.pairs.*.consumed_bits``: over nodes a graph pair's round spends its mask
    bits and 256 bits of refs tag key (docs/secure_aggregation.md §9), so the bar is both, and says so with the
    split per round where the metrics give it (review s39 user F10: "consumed by FL masks" = 4 480 bits was
    10 × (192 masks + 256 refs tag))."""
    parts = train.get("key_bits_per_pair_per_round_parts") or {}
    mask, tag = parts.get("masks"), parts.get("refs_tag")
    rounds = train.get("rounds") or []
    flower = (train.get("nodes") or {}).get("flower") or []
    if tag is None and flower and isinstance(flower[-1].get("tag_bits_per_pair"), int):
        tag = flower[-1]["tag_bits_per_pair"]  # over nodes: the Flower rounds' tag key (as the CLI summary reads it)
        per_pair = rounds[-1].get("key_bits_per_pair") if rounds else None
        mask = per_pair - tag if isinstance(per_pair, int) else None
    if isinstance(tag, int) and tag > 0:
        split = f" ({mask:,} + {tag:,} bits per pair and round)" if isinstance(mask, int) else ""
        return f"consumed by FL masks + refs tags{split} (this run)"
    if isinstance(tag, int):
        return "consumed by FL masks (this run)"
    return "consumed by FL masks and any refs tags (this run)"


def _plot_training(run: RunRecord, m: dict[str, Any], plots: dict[str, Path]) -> None:
    """Test accuracy and loss per federated-training round. Adds to ``plots`` what the metrics allow."""
    train = m.get("train") or {}
    rounds = train.get("rounds") or []
    if rounds:
        def draw_train(ax: Any) -> None:
            r = [e["round"] for e in rounds]
            ax.plot(r, [100 * e["test_accuracy"] for e in rounds], "o-", color="tab:blue", label="test accuracy")
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy [%]", color="tab:blue")
            ax.set_ylim(0, 100)  # the whole scale, as the GUI (docs/gui.md): a 1-point wobble is not a trend
            ax2 = ax.twinx()
            ax2.plot(r, [e["test_loss"] for e in rounds], "s--", color="tab:red", label="test loss")
            ax2.set_ylabel("test loss", color="tab:red")
            ax.set_title(f"Federated training ({train.get('task', '')}, keys: {train.get('key_source', '?')})")
        plots["Training"] = _fig(run.plot_path("training.png"), draw_train)


def make_plots(run: RunRecord, m: dict[str, Any], captions: dict[str, str] | None = None) -> dict[str, Path]:
    """Draw every plot the metrics allow; returns {title: png path}. A plot's note, if any, goes to
    ``captions`` under its title."""
    plots: dict[str, Path] = {}
    _plot_count_rates(run, m, plots)
    _plot_distillation(run, m, plots, captions)
    _plot_key_pools(run, m, plots)
    _plot_training(run, m, plots)
    return plots


#: Text of a cell whose value the metrics hold as null (e.g. no block reached estimation).
NOT_AVAILABLE = "n/a"


#: Decimals of a float in a column that names none (every column of the report that holds floats names its own).
DEFAULT_DECIMALS = 2


def number_cell(v: Any, decimals: int | None = None) -> str:
    """A number as a table cell, as the CLI's tables print them: thousands separators ("2,159,122"), and with
    ``decimals`` the same number of decimals for every value of a column, an integer's too ("82.70", "71.66";
    review s40 user LOW-1: ``:.4g`` dropped trailing zeros, so one column read "82.7, 71.66, 58.71"). Without
    ``decimals`` an integer is exact and a float has :data:`DEFAULT_DECIMALS`. Anything else is ``str(v)``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if decimals is None:
        return f"{v:,}" if isinstance(v, int) else f"{v:,.{DEFAULT_DECIMALS}f}"
    return f"{v:,.{decimals}f}"


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str] | tuple[str, str, int]]) -> str:
    """HTML table; a null or missing value shows as :data:`NOT_AVAILABLE`, never as an empty cell. A column is
    ``(key, title)`` or ``(key, title, decimals)``: its numbers go through :func:`number_cell`."""
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    body = ""
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c[0])
            text = NOT_AVAILABLE if v is None or v == "" else number_cell(v, c[2] if len(c) > 2 else None)
            cells.append(f"<td>{html.escape(text)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _dropout_section(train: dict[str, Any]) -> list[str]:
    """The clients the rounds lost over nodes (``train.dropouts``): who, in which round, at which stage;
    none of them is in that round's aggregate (review s37 F3)."""
    drops = train.get("dropouts") or []
    if not drops:
        return []
    rows = [{**d, "aggregate": "left out", "reveal": d.get("reveal_bits", 0) if d.get("stage") == "after masking" else "none"} for d in drops]
    return ["<h3>Clients lost during training</h3><p>The aggregate of each round below leaves the client out: "
            "lost before masking, it took no part in the round; lost after masking, the survivors revealed their "
            "pair keys with it (bits below) so the server could remove its pair masks, and its update was dropped "
            "(docs/secure_aggregation.md §9).</p>",
            _table(rows, [("round", "round"), ("client", "client"), ("stage", "lost"), ("reason", "reason"),
                          ("aggregate", "aggregate"), ("reveal", "pair-key bits revealed")])]


def _key_wait_section(train: dict[str, Any], comparison: dict[str, Any]) -> list[str]:
    """"Waits for key": per round whether it waited, the wall and station seconds of the wait and the
    starved pairs; per top-up acquisition and short pair, the key planned against the key delivered;
    the plan's first starving round and station time against the run's. Every cell holds a value."""
    rounds = train.get("rounds") or []
    if not rounds or "key_waited" not in rounds[0]:
        return []
    w = train.get("key_waits") or {}
    cw = comparison.get("key_waits") or {}
    out = ["<h2>Waits for key</h2>",
           "<p class='muted'>Before a round whose key the stores lack, the run acquires and distils more key on the "
           "station (a top-up, sized by the planner for the remaining rounds) and trains on from the same model "
           f"({'on' if w.get('enabled', True) else 'off: --no-wait-for-key'}; at most {w.get('max_top_ups', '?')} "
           "top-ups per run).</p>"]
    rows = [{"round": r["round"], "waited": "yes" if r["key_waited"] else "no", "wait_s": float(r["key_wait_s"]),
             "station_s": float(r["key_wait_station_s"]), "top_ups": r["key_top_ups"],
             "starved": ", ".join(r["key_starved_pairs"]) or "none"} for r in rounds]
    out.append(_table(rows, [("round", "round"), ("waited", "waited for key"), ("wait_s", "wait, wall [s]", 1),
                             ("station_s", "station time acquired [s]", 1), ("top_ups", "top-up acquisitions"),
                             ("starved", "starved pairs")]))
    tops = [{"top_up": t["top_up"], "round": t["round"], "duration_s": float(t["duration_s"]), "pair": q,
             "deficit": v["deficit_bits"], "predicted": float(v["predicted_key_bits"]), "delivered": v["delivered_bits"],
             "ratio": "no key predicted" if v["key_ratio"] is None else float(v["key_ratio"])}
            for t in cw.get("top_ups") or [] for q, v in sorted(t["pairs"].items())]
    if tops:
        out.append(_table(tops, [("top_up", "top-up"), ("round", "before round"), ("duration_s", "station time [s]", 1),
                                 ("pair", "short pair"), ("deficit", "key lacking [bit]"),
                                 ("predicted", "key planned [bit]", 0), ("delivered", "key delivered [bit]"),
                                 ("ratio", "delivered / planned", 2)]))
    if cw:
        first = cw.get("predicted_first_wait_round")
        got = cw.get("measured_first_wait_round")
        ratio = cw.get("station_s_ratio")
        out.append(_table([{
            "first_pred": f"round {first}" if first is not None else "none",
            "first_meas": f"round {got}" if got is not None else "none",
            "st_pred": float(cw["predicted_station_s"]) if cw.get("predicted_station_s") is not None else "no key",
            "st_meas": float(cw["measured_station_s"]),
            "st_ratio": float(ratio) if ratio is not None else "no prediction"}],
            [("first_pred", "first wait, planned"), ("first_meas", "first wait, run"),
             ("st_pred", "station time, planned [s]", 1), ("st_meas", "station time, run [s]", 1),
             ("st_ratio", "run / planned", 2)]))
    return out


def _count(v: Any) -> Any:
    """An integer counter as a cell (0 stays 0); None (not counted on this path) stays None (n/a)."""
    return None if v is None else int(v)


def _ppm(n: Any, of: Any) -> Any:
    """``n`` per million of ``of`` (0 stays 0; None when either is missing or ``of`` is 0)."""
    if n is None or not of:
        return None
    return 0 if n == 0 else 1e6 * n / of


def _dropped_section(m: dict[str, Any]) -> list[str]:
    """"Dropped slots": per pair, the slots dropped and counted in its slot count N as sent without a
    click (docs/protocol.md §5.1, docs/postprocessing.md "Lost data"), and per acquisition, their causes:
    the tagger's overflow and missed-event intervals, missing or duplicated frame markers, frames a
    client did not play. Written when the metrics hold the acquisition record (``acquisition``); a
    counter the acquisition's path does not report shows as n/a, a zero as 0."""
    acq = m.get("acquisition")
    dist = (m.get("distill") or {}).get("pairs") or {}
    if not isinstance(acq, dict) or not dist:
        return []
    out = ["<h2>Dropped slots</h2>",
           "<p class='muted'>Slots inside the time tagger's overflow or missed-event intervals, in frames without "
           "a valid marker, and in frames a client did not play are dropped: never announced, never sifted, "
           "counted in the pair's slots as sent without a click (docs/postprocessing.md, \"Lost data\").</p>"]
    rows = [{"pair": p, "n": _count(v.get("dropped_slots")), "of": _count(v.get("n_slots")),
             "ppm": _ppm(v.get("dropped_slots"), v.get("n_slots"))} for p, v in sorted(dist.items())]
    out.append(_table(rows, [("pair", "pair"), ("n", "dropped slots [slots]"), ("of", "pair's slots [slots]"),
                             ("ppm", "dropped share [ppm]", 2)]))
    st = acq.get("slotting")
    st = st if isinstance(st, dict) else {}
    det = acq.get("detector") or {}
    causes = [
        ("tagger overflow / missed-event intervals", st.get("lost_intervals"), "intervals"),
        ("tag blocks flagged overflow", st.get("overflow_blocks"), "blocks"),
        ("slots dropped for lost tagger data", st.get("dropped_slots_lost_data"), "slots"),
        ("missing frame markers", st.get("missing_markers"), "markers"),
        ("duplicated or stray frame markers", st.get("spurious_markers"), "markers"),
        ("slots dropped for sync (missing or off-grid marker)", st.get("dropped_slots_sync"), "slots"),
    ]
    if "dropped" in det:  # over nodes: the detector node's total too
        causes.append(("slots dropped by the detector's slotting (all causes)", det["dropped"], "slots"))
    for key, what in (("tagger_overflows", "tagger overflows (its SDK's count)"),
                      ("tagger_missed_events", "tags the tagger missed (its SDK's count)")):
        if key in det:
            causes.append((what, det[key], "overflows" if key == "tagger_overflows" else "tags"))
    mod = acq.get("modulation") or {}
    if mod:
        causes += [(f"frames not played by {c} (late, underflow or cut off)", v.get("lost"), "frames")
                   for c, v in sorted(mod.items())]
    else:
        causes.append(("frames not played (no client streams to a pattern generator)", 0, "frames"))
    out.append(_table([{"cause": c, "n": _count(n), "unit": u} for c, n, u in causes],
                      [("cause", "cause (this acquisition)"), ("n", "count"), ("unit", "unit")]))
    if not st:
        out.append("<p class='muted'>n/a: the slotting counters by cause are not reported on this acquisition's "
                   f"path ({html.escape(str(acq.get('path', '?')))}).</p>")
    return out


def _fmt_s(v: Any) -> str | None:
    return None if v is None else f"{float(v):.1f} s"


def _summary_section(m: dict[str, Any]) -> list[str]:
    """"Run summary": what a reader needs to interpret the numbers below it (review s36 F12): the acquisition's
    station time, block size and ε_sec, the training settings, wall time per phase, when and by which labqfl
    version the report was written. A value the metrics lack shows as n/a."""
    from labqfl import __version__

    st = m.get("settings") or {}
    acq = m.get("acquire") or {}
    pred = (m.get("plan") or {}).get("predicted") or {}
    phases = m.get("phases_s") or {}
    block = (f"{pred['block_slots']:.3g} slots per pair (block-size rule)" if pred.get("block_slots")
             else f"{st['block_bits']:,} sifted bits (--block-bits)" if st.get("block_bits") else None)
    eps = st.get("eps_sec")
    train = m.get("train") or {}
    rows = [("acquisition (station time)", _fmt_s(acq.get("station_s_total", acq.get("duration_s",
                                                                                     st.get("duration_s"))))),
            ("block size", block),
            ("ε_sec (security parameter per block)", None if eps is None else f"{float(eps):.0e}"),
            ("error correction", st.get("engine")),
            ("training", (f"{train.get('task', st.get('task', '?'))}, {train.get('rounds_run', st.get('rounds'))} "
                          f"rounds, {train.get('clients', '?')} clients, q = {train.get('q', st.get('q'))} bits, "
                          f"seed {st.get('seed')}") if train or st.get("task") else None),
            ("wall time", (f"{float(phases['total_s']):.1f} s (" + ", ".join(
                f"{k} {float(v):.1f} s" for k, v in phases.items() if k != "total_s") + ")")
             if phases.get("total_s") is not None else None),
            ("written", m.get("written_utc")),
            ("labqfl version", __version__)]
    items = "".join(f"<li>{html.escape(k)}: {html.escape(NOT_AVAILABLE if v is None else str(v))}</li>"
                    for k, v in rows)
    return ["<h2>Run summary</h2>", f"<ul>{items}</ul>"]


#: Cascade's mean efficiency f on test frames of 6·10^4–10^7 bits at 0.5–8 % QBER, as the ``--engine`` help
#: states it (docs/reconciliation.md, efficiency tables). Review s38 user F3: a block at f = 1.131 stood unflagged
#: under a legend saying "Cascade reaches 1.04–1.05".
CASCADE_F_USUAL = (1.03, 1.07)
#: What follows an f above :data:`CASCADE_F_USUAL` in the report's key-distillation table.
F_HIGH_MARK = "(above Cascade's usual range)"


#: What the key-distillation table's columns mean (docs/protocol.md (P6), §6; docs/metrics.md).
DISTILL_LEGEND = ("QBER X: error rate of the key bits (both clients in X at the signal intensity) that error "
                  "correction compared; phase-error bound: the upper bound on the phase-error rate from the decoy "
                  "estimates (docs/protocol.md (P6)); leaked (EC): bits error correction disclosed, subtracted from "
                  "the key; f: error-correction efficiency, leaked / (n·h(QBER)) — 1 is the Shannon limit; Cascade's "
                  f"mean f on test frames is {CASCADE_F_USUAL[0]}–{CASCADE_F_USUAL[1]} (docs/reconciliation.md, "
                  "the --engine help), a block's f varies about it, and a pair's Cascade f above that range is marked "
                  f"\"{F_HIGH_MARK}\"; final key: bits stored per pair after privacy amplification; key rate: final "
                  "bits / acquisition time.")

def f_is_high(f: Any, engine: Any) -> bool:
    """Whether an efficiency f gets :data:`F_HIGH_MARK`: Cascade's, above :data:`CASCADE_F_USUAL` (the report's cell
    and ``labqfl distill``'s table, review s39 user F4)."""
    return f is not None and engine == "cascade" and float(f) > CASCADE_F_USUAL[1]


#: Decimals of an efficiency f in the report (and ``labqfl distill``'s table).
F_DECIMALS = 3


def f_cell(f: Any, engine: Any) -> Any:
    """The report's f cell: the value to 3 decimals (as ``labqfl distill``'s table; review s40 user LOW-1: "1.04"
    stood beside "1.039"), marked where Cascade's is above its usual range."""
    if f is None:
        return None
    return f"{float(f):.{F_DECIMALS}f}" + (f" {F_HIGH_MARK}" if f_is_high(f, engine) else "")


def data_text(train: dict[str, Any]) -> str | None:
    """What a run trained on, in words, from its ``train.data`` (:func:`labqfl.fl.datasets.tasks.load_task`'s
    metadata) and ``task``: e.g. "MNIST digits 0 vs 1, 200 test images". Review s39 user F5: "final test accuracy
    97 %" for mnist-qnn read as the 10-class result. None where the metrics lack it (an older run)."""
    d, task = train.get("data") or {}, train.get("task")
    n_test = d.get("test_size")
    if not d or n_test is None:
        return None
    digits = list(d.get("digits") or [])
    if task == "mnist-qnn" and len(digits) == 2:
        return f"MNIST digits {digits[0]} vs {digits[1]}, {n_test:,} test images"
    if str(task).startswith("mnist"):
        return f"MNIST digits {digits[0]}–{digits[-1]} ({len(digits)} classes), {n_test:,} test images" if digits \
            else f"MNIST, {n_test:,} test images"
    if task == "ntangled" and d.get("targets"):
        ce = " vs ".join(f"{float(t):g}" for t in d["targets"])
        return f"NTangled-style states, concentratable entanglement {ce} ± {d.get('tol')}, {n_test:,} test states"
    if task == "magic" and d.get("m2_low") is not None:
        return (f"magic states, stabilizer Rényi entropy M2 ≤ {d['m2_low']:g} vs ≥ {d['m2_high']:g} bits, "
                f"{n_test:,} test states")
    return f"{task}, {n_test:,} test samples"


def _pct(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def auth_key_text(prov: dict[str, Any]) -> str:
    """A pair's authentication-key rows of a :func:`labqfl.provenance.summarize_blocks` summary in words:
    its pre-shared secret(s) and the refills taken from distilled blocks (neither is a distilled block)."""
    pre, refills = prov.get("preshared_blocks", 0), prov.get("auth_refill_blocks", 0)
    parts = [text for text, n in ((f"{pre} pre-shared", pre), (f"{refills} refill(s) from distilled blocks", refills))
             if n]
    return ", ".join(parts) or "none"


def write_report(run: RunRecord, metrics: dict[str, Any] | None = None,
                 phases: Callable[[], dict[str, float]] | None = None, command: str = "run") -> Path:
    """Write ``report.html`` (+ PNGs) for a run; returns the HTML path. ``phases``: the wall seconds per phase
    (``phases_s``) of the call writing it, asked for once the plots are drawn (``labqfl run`` adds ``phases_s`` to
    metrics.json after its report phase, so without it the summary said "wall time: n/a", review s38 user F1).
    ``command``: the labqfl command whose folder it is, named in the title ("labqfl distill …" for a distill
    folder that ``labqfl report`` rebuilds)."""
    m = metrics if metrics is not None else run.read_metrics()
    captions: dict[str, str] = {}
    plots = make_plots(run, m, captions)
    if phases is not None:
        m = {**m, "phases_s": phases()}
    parts = [f"<h1>labqfl {html.escape(command)} {html.escape(run.name)}</h1>"]
    status = m.get("status", "unknown")
    parts.append(
        f"<p><span class='badge{' warn' if status != 'complete' else ''}'>status: {html.escape(status)}</span>"
        f"<span class='badge'>station: {html.escape(str(m.get('station', '?')))}</span>"
        f"<span class='badge'>key source: {html.escape(str(m.get('key_source', '?')))}</span>"
        f"<span class='badge'>acquisition: {html.escape(str((m.get('acquisition') or {}).get('path', '?')))}</span></p>"
    )
    parts.extend(_summary_section(m))
    nodes = m.get("acquisition") or {}
    if nodes.get("path") == "nodes":  # labqfl run --nodes: each node's start-up (spawn → listening)
        codes = sorted(set(nodes["exit_codes"].values()), key=str)
        parts.append("<p>Node processes, start-up [s]: " + html.escape(", ".join(
            f"{n} {t:.1f}" for n, t in sorted(nodes["startup_s"]["nodes"].items()))) +
            html.escape(f"; all exited with code {codes[0]}" if len(codes) == 1 else
                        f"; exit codes {', '.join(str(c) for c in codes)}") + "</p>")
    dist = (m.get("distill") or {}).get("pairs") or {}
    if dist:
        engine = (m.get("settings") or {}).get("engine")
        rows = [{"pair": p, **v, "qber_pct": _pct(v.get("qber_x")), "phase_pct": _pct(v.get("phase_error_bound")),
                 "f_cell": f_cell(v.get("efficiency_f"), v.get("engine", engine)),
                 "kbps": None if v.get("secure_key_rate_bps") is None else float(v["secure_key_rate_bps"]) / 1e3}
                for p, v in sorted(dist.items())]
        parts.append("<h2>Key distillation</h2>")
        parts.append(_table(rows, [("pair", "pair"), ("sifted_bits", "sifted [bits]"), ("qber_pct", "QBER X (key) [%]", 2),
                                   ("phase_pct", "phase-error bound [%]", 2), ("leaked_ec_bits", "leaked (EC) [bits]"),
                                   ("f_cell", "f (EC efficiency)"), ("final_key_bits", "final key [bits]"),
                                   ("kbps", "key rate [kbit/s]", 1), ("status", "status")]))
        parts.append(f"<p class='muted'>{html.escape(DISTILL_LEGEND)}</p>")
    parts.extend(_dropped_section(m))
    kp = (m.get("keys") or {}).get("pairs") or {}
    prov_rows = [{"pair": p, "blocks": ", ".join(f"{k}: {n}" for k, n in v["provenance"]["blocks"].items())
                  or "none with a provenance record", "auth": auth_key_text(v["provenance"]),
                  "security": v["provenance"]["security"]}
                 for p, v in sorted(kp.items()) if isinstance(v.get("provenance"), dict)]
    if prov_rows:
        parts.append("<h2>Key provenance</h2><p class='muted'>Per pair, the key blocks this run distilled by physical "
                     "layer / clients' randomness, the authentication key's rows in the store (the pre-shared "
                     "secret, and one refill from each distilled block), and what the keys' security rests on "
                     "(docs/metrics.md).</p>")
        parts.append(_table(prov_rows, [("pair", "pair"), ("blocks", "distilled blocks (physical layer/randomness)"),
                                        ("auth", "authentication key"), ("security", "security rests on")]))
    train = m.get("train") or {}
    if train:
        parts.append("<h2>Federated training</h2>")
        parts.append(_table([{**train, "acc_pct": _pct(train.get("final_test_accuracy")), "data_text": data_text(train)}], [
            ("task", "task"), ("data_text", "data (test set)"), ("clients", "clients"), ("q", "q [bits]"), ("rounds_run", "rounds"),
            ("acc_pct", "final test accuracy [%]", 1),
            # CSPRNG masks use no QKD key (review s36 F18)
            ("key_bits_total", "key bits used" if train.get("key_source", "qkd") == "qkd"
             else "mask bits (CSPRNG, no QKD key used)"),
            ("upload_bits_per_client", "upload bits/client/round"),
            ("baseline_upload_bits_per_client", "float32 baseline [bits/client/round]"), ("key_source", "key source")]))
        if train.get("security"):
            parts.append(f"<p>Mask security: {html.escape(str(train['security']))}</p>")
        parts.extend(_dropout_section(train))
        parts.extend(_key_wait_section(train, (m.get("plan") or {}).get("comparison") or {}))
    for title, path in plots.items():
        b64 = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>")
        if title in captions:
            parts.append(f"<p class='muted'>{html.escape(captions[title])}</p>")
    parts.append("<p class='muted'>Generated by labqfl from metrics.json; schema in docs/metrics.md.</p>")
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>labqfl {html.escape(run.name)}</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    out = run.path / "report.html"
    out.write_text(doc, encoding="utf-8")
    return out
