"""``labqfl bench [NAME...]``: run registered benchmarks, each against its named baseline."""

from __future__ import annotations

import time
from collections.abc import Iterable

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labqfl.bench import machine_info, registry
from labqfl.cli.common import JSON_OPTION, emit, fail, handle_errors, print_table, progress_bar

#: appended to a benchmark's description under --quick, whose sizes are smaller than it names
QUICK_NOTE = " [--quick: smaller sizes than named here, see details; figures not representative]"

@handle_errors
def bench(
    names: list[str] = typer.Argument(None, help="Benchmarks to run (default: all; - and _ alike in names). See --list."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a smoke run; figures not representative)."),
    list_only: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run benchmarks: each reports its figure, the baseline run beside it, the ratio and the machine."""
    reg = registry()
    if list_only:
        def render_list(con):  # type: ignore[no-untyped-def]
            for n, e in reg.items():
                # the target on a line of its own, named (review s36 F27: it ran on from the description)
                con.print(f"[bold]{escape(n)}[/]: {escape(e.description)}", markup=True)
                con.print(Text(f"  target: {e.target}"))

        emit({"benchmarks": {n: {"description": e.description, "target": e.target} for n, e in reg.items()}},
             as_json, render_list)
        return
    names = [_registered(n, reg) for n in names or []]
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise fail(f"unknown benchmark(s) {unknown}; available: {list(reg)}")
    skipped = {n: why for n, e in reg.items() if (why := e.unavailable()) is not None}
    refused = [f"{n} ({skipped[n]})" for n in names or [] if n in skipped]
    if refused:
        raise fail(f"cannot run here: {'; '.join(refused)}")
    selected = names or [n for n in reg if n not in skipped]
    results = {}
    with progress_bar() as prog:
        task = prog.add_task("benchmarks", total=len(selected))
        for n in selected:
            prog.update(task, description=f"bench {n}")
            t0 = time.perf_counter()
            r = reg[n].fn(quick)
            # --quick runs smaller sizes than the description names (docs review s34 L16): say so in it
            desc = reg[n].description + (QUICK_NOTE if quick else "")
            results[n] = {"description": desc, "figure": r.figure, "unit": r.unit,
                          "baseline": r.baseline, "baseline_figure": r.baseline_figure, "ratio": r.ratio,
                          "higher_is_better": r.higher_is_better, "target": r.target or reg[n].target,
                          "passed": r.passed, "details": r.details, "wall_s": time.perf_counter() - t0}
            prog.advance(task)
    data = {"machine": machine_info(), "quick": quick, "results": results,
            "skipped": {} if names else skipped}

    def render(con):  # type: ignore[no-untyped-def]
        m = data["machine"]
        gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
        con.print(f"machine: {m['cpu']} ({m['usable_cores']} usable of {m['logical_cores']} cores{gpu}), Python {m['python']}")
        for n, why in data["skipped"].items():
            con.print(f"skipped {n}: {why}")
        t = Table("benchmark", "figure", "baseline", "ratio", "target", "met")
        for n, r in results.items():
            met = {True: Text("yes", style="green"), False: Text("no", style="red"), None: Text("—")}[r["passed"]]
            t.add_row(n, f"{r['figure']:.4g} {r['unit']}", f"{r['baseline']}: {r['baseline_figure']:.4g} {r['unit']}",
                      f"{r['ratio']:.3g}×", r["target"], met)
        print_table(con, t)  # whole at any width: one record per benchmark where it does not fit
        for n, r in results.items():  # extra tables a benchmark reports (details["tables"])
            for tab in r["details"].get("tables", []):
                extra = Table(*tab["columns"], title=f"{n}: {tab['title']}")
                for row in tab["rows"]:
                    extra.add_row(*(str(v) for v in row))
                print_table(con, extra)

    emit(data, as_json, render)


def _registered(name: str, reg: Iterable[str]) -> str:
    """The registered benchmark ``name`` means, ``-`` and ``_`` alike (``secure-aggregation`` is
    ``secure_aggregation``; CLI review s32 L2: the names mix both); else ``name`` as given."""
    key = name.replace("_", "-")
    return next((n for n in reg if n.replace("_", "-") == key), name)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
