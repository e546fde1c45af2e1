"""Review s40 user MED-1: report.html's "Key pools" plot laid its three labels in one row 1000 px wide in a 770 px
figure; ``tight_layout`` squeezed the axes into the middle and the PNG cut both ends of the legend. Every plot of
the report is drawn here from the metrics.json of a real ``labqfl run`` (the default station over nodes, 10 s, 10
rounds of mnist-qnn; ``data/run_nodes_metrics.json``, copied unchanged from the run folder) and every legend must
lie inside its figure as saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from labqfl.report import write_report
from labqfl.runs import RunRecord

METRICS = Path(__file__).parent / "data" / "run_nodes_metrics.json"
#: every plot the report draws from that run, and whether it has a legend
PLOTS = {"count_rates.png": True, "qber.png": True, "key_rate.png": True, "key_pools.png": True,
         "training.png": False}


def _saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Write the report; per PNG, the figure's box and its legends' boxes (pixels) as saved."""
    seen: dict[str, dict[str, Any]] = {}
    real = Figure.savefig

    def savefig(fig: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        renderer = fig.canvas.get_renderer()
        legends = [leg for ax in fig.axes if (leg := ax.get_legend()) is not None] + list(fig.legends)
        seen[Path(fname).name] = {
            "figure": fig.bbox.frozen(), "axes": fig.axes[0].get_window_extent(renderer).frozen(),
            "legends": [(" | ".join(t.get_text() for t in leg.get_texts()), leg.get_window_extent(renderer).frozen())
                        for leg in legends]}
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        write_report(run, m)
    return seen


def test_every_legend_of_every_plot_lies_inside_its_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _saved(tmp_path, monkeypatch, json.loads(METRICS.read_text(encoding="utf-8")))
    assert set(seen) == set(PLOTS)
    for name, has_legend in PLOTS.items():
        assert bool(seen[name]["legends"]) == has_legend, name
        fb = seen[name]["figure"]
        for labels, lb in seen[name]["legends"]:
            inside = (lb.x0 >= fb.x0 - 0.5 and lb.x1 <= fb.x1 + 0.5 and lb.y0 >= fb.y0 - 0.5 and lb.y1 <= fb.y1 + 0.5)
            assert inside, (f"{name}: legend x {lb.x0:.0f}..{lb.x1:.0f}, y {lb.y0:.0f}..{lb.y1:.0f} px outside the "
                            f"figure x {fb.x0:.0f}..{fb.x1:.0f}, y {fb.y0:.0f}..{fb.y1:.0f} px: {labels}")


def test_the_key_pools_labels_are_the_runs_and_the_bars_keep_the_width(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above is on the labels the run gives (the long FL label of review s39 F10 among them), and the axes
    are not squeezed into a strip: they span most of the figure's width (they spanned 43 % of it)."""
    pools = _saved(tmp_path, monkeypatch, json.loads(METRICS.read_text(encoding="utf-8")))["key_pools.png"]
    assert pools["axes"].width >= 0.8 * pools["figure"].width, (pools["axes"], pools["figure"])
    assert "consumed by FL masks + refs tags (192 + 256 bits per pair and round) (this run)" in pools["legends"][0][0]


def test_a_legend_wider_than_the_figure_grows_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net under every plot (``report._fig``): a legend laid out wider or taller than the figure (a
    station with more pairs, a longer label) grows the figure until it fits, rather than being cut off."""
    import labqfl.report as report

    seen: dict[str, Any] = {}
    real = Figure.savefig

    def savefig(fig: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        leg = fig.axes[0].get_legend()
        seen.update(figure=fig.bbox.frozen(), legend=leg.get_window_extent(fig.canvas.get_renderer()).frozen())
        return real(fig, fname, *args, **kwargs)

    def draw(ax: Any) -> None:
        for k in range(3):
            ax.bar([k], [1.0], label=f"a label of {60 + k} characters " + "x" * (35 + k))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8)

    monkeypatch.setattr(Figure, "savefig", savefig)
    report._fig(tmp_path / "wide.png", draw)
    fb, lb = seen["figure"], seen["legend"]
    assert fb.width > 7.0 * 110  # grown
    assert lb.x0 >= fb.x0 - 0.5 and lb.x1 <= fb.x1 + 0.5 and lb.y0 >= fb.y0 - 0.5 and lb.y1 <= fb.y1 + 0.5, (lb, fb)
