"""Conventions shared by every CLI command.

* ``--json``: machine-readable output on **stdout** (one JSON document), nothing else on stdout.
* Humans get rich text and progress bars on **stderr**.
* A failure exits non-zero with one clear line on stderr: ``error: <what was wrong>``; with ``--json`` stdout holds
  one JSON object with ``error`` (:func:`fail`): ``{"error", "exit_code", "command"}``, or the command's own
  document with its ``error`` when it wrote one first (:func:`mark_json_sent`). A node role serving with ``--json``
  (``labqfl node client``…) writes its listening line as one JSON line first; a failure after it is a second line.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from labqfl.contracts.types import MIN_TEST_CLICKS
from labqfl.errors import LabqflError, interrupt_inside
from labqfl.serialize import to_jsonable

#: All human-facing output goes to stderr, so stdout carries only JSON.
#: Piped or logged output (not a terminal) gets 120 columns instead of rich's default 80, so the
#: tables stay readable in log files; ``COLUMNS`` overrides.
#: ``markup=False``: text is shown as written, so a unit such as ``[s]`` or ``[dB]`` in a table header,
#: a message or a value is never taken for a rich style tag and dropped; the few styled lines pass
#: ``markup=True`` and escape what they interpolate.
console = Console(stderr=True, highlight=False, markup=False,
                  width=None if (sys.stderr.isatty() or os.environ.get("COLUMNS")) else 120)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="Station TOML file (default: the embedded simulated 4-client station).",
    dir_okay=False,
)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
#: exit status after SIGTERM turned into an orderly stop (128 + 15, as a shell reports a SIGTERM death)
EXIT_TERMINATED = 143

F = TypeVar("F", bound=Callable[..., Any])


def print_path(con: Console, label: str, path: object) -> None:
    """``label: path`` on one line, however narrow the terminal: rich breaks long lines where they reach
    its width, and a path broken over two lines can be neither copied nor read back by a script."""
    con.print(f"{label}: {path}", soft_wrap=True)


def _cell_text(cell: object) -> Text | None:
    """A table cell or header as :class:`rich.text.Text` (a copy: the table's own is not changed), or None for
    another renderable (whose width this module cannot know)."""
    if isinstance(cell, Text):
        return cell.copy()
    return Text(cell) if isinstance(cell, str) else None


def _wrap_header(header: Text, width: int) -> Text:
    """``header`` broken at its spaces into lines of at most ``width`` cells (a longer word keeps its line)."""
    lines: list[str] = []
    for word in header.plain.split():
        if lines and cell_len(lines[-1]) + 1 + cell_len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    out = Text("\n".join(lines), style=header.style)
    return out


def _table_width(con: Console, table: Table) -> int:
    """The width ``table`` takes with no cell wrapped or cut (its natural width)."""
    return Measurement.get(con, con.options.update_width(10**5), table).maximum


def print_table(con: Console, table: Table, *, key_columns: int = 1) -> None:
    """Print ``table`` so that no number, unit or header word is ever cut (review s36 F3, F4, F11).

    rich fits a table wider than the terminal by shrinking its columns and cutting their text with "…": at
    80 columns ``labqfl distill`` showed ``106…`` for the final key bits. Here, in this order: the table as
    it is, when it fits; else with its headers broken at their spaces over lines no wider than their
    column's widest value (``QBER X`` above ``key``), when that fits; else one record per row, as the
    ``--help`` panels of :mod:`labqfl.cli.helpfmt` keep every word whole at 80 columns: a line naming the row
    by its first ``key_columns`` cells (``pair C1-C2``), then one ``header: value`` line per other column
    (an empty cell is left out), wrapped at words, a word wider than the terminal folded, never cut. A
    table holding a renderable other than text is printed as rich lays it out."""
    width = con.size.width
    columns = table.columns
    headers = [_cell_text(c.header) for c in columns]
    cells = [[_cell_text(x) for x in c.cells] for c in columns]
    if any(h is None for h in headers) or any(x is None for col in cells for x in col) \
            or _table_width(con, table) <= width:
        con.print(table)
        return
    heads = [h for h in headers if h is not None]
    rows = [[x for x in col if x is not None] for col in cells]
    wrapped = copy.copy(table)
    wrapped.columns = [copy.copy(c) for c in columns]
    for col, head, values in zip(wrapped.columns, heads, rows, strict=True):
        widest = max((max(cell_len(line) for line in v.plain.split("\n")) for v in values), default=0)
        col.header = _wrap_header(head, max(widest, 1))
    if _table_width(con, wrapped) <= width:
        con.print(wrapped)
        return
    if table.title:
        con.print(table.title)
    for r in range(table.row_count):
        name = Text(" ").join(Text.assemble(heads[i].plain + " ", rows[i][r]) for i in range(key_columns))
        name.stylize("bold")
        con.print(name, overflow="fold")
        for head, values in zip(heads[key_columns:], rows[key_columns:], strict=True):
            value = values[r]
            if value.plain.strip():
                label = " ".join(head.plain.split())
                line = Text.assemble("  " + label + ": ", value)
                con.print(Text("\n    ").join(line.split("\n")), overflow="fold")
    if table.caption:
        con.print(table.caption)


#: ``click.Context.meta`` key (shared by a command's whole context chain, fresh for each invocation): a JSON
#: document went to stdout already, so a failure adds none (:func:`fail`)
JSON_SENT = "labqfl.json_sent"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
    mark_json_sent()


def mark_json_sent() -> None:
    """Note that this invocation wrote its JSON document on stdout (:func:`print_json` does; a command that
    writes its own, ``keys serve``'s listening line, calls this), so that :func:`fail` adds no second one."""
    import click

    if (ctx := click.get_current_context(silent=True)) is not None:
        ctx.meta[JSON_SENT] = True


def json_requested(ctx: Any) -> bool:
    """Whether the command of click context ``ctx`` was given ``--json`` (its parameter whose option is
    ``--json``, whatever its name), as parsed so far."""
    return any("--json" in getattr(p, "opts", ()) and bool(ctx.params.get(p.name)) for p in ctx.command.params)


def print_failure_json(message: str, code: int, command: str | None) -> None:
    """A failure as the one JSON document on stdout: ``{"error": message, "exit_code": code, "command":
    "labqfl keys status"}`` (issue 19, review s36 input F10: a script reading ``--json`` output got an empty
    stdout on every failure before processing)."""
    sys.stdout.write(json.dumps({"error": message, "exit_code": code, "command": command}, indent=2) + "\n")
    sys.stdout.flush()


def emit(data: Any, as_json: bool, render: Callable[[Console], None] | None = None) -> None:
    """Print ``data`` as JSON on stdout, or call ``render(console)`` for humans on stderr."""
    if as_json:
        print_json(data)
    elif render is not None:
        render(console)
    else:
        console.print_json(json.dumps(to_jsonable(data)))


#: Help of every ``--engine`` that picks the error correction (distill, run, node): what each costs in key
#: (docs/reconciliation.md, measured; CLI review s32 L12: ldpc looked like an equal choice and lost 22–50 % of the key)
EC_ENGINE_HELP = ("Error correction: cascade (default; leaks f ≈ 1.03–1.07 × the Shannon limit) or ldpc (blind "
                  "rate-adaptive LDPC, few round trips; f 1.24–1.8 on the default station's 3-s blocks at 0.5–0.9 % "
                  "QBER, where the first block's QBER is estimated from its test cells, 1.17–1.22 there with the QBER "
                  "known, 1.11–1.16 at 1–8 %).")


#: Why a pair gave no key when every block of it was skipped: the recording was distilled into these stores before
ALREADY_DISTILLED = ("already distilled into these stores by an earlier run of this recording: its key is there "
                     "(`labqfl keys status`), or its raw bits were spent; nothing new to store")


def _why_no_key(d: dict[str, Any]) -> str:
    """One line: why a pair gave no key (its failure, else its first abort reason, else its skipped blocks). No
    count of the pair's own is in it where all its blocks were skipped, so that pairs with one reason group."""
    reasons = list(d.get("abort_reasons") or [])
    skipped = int(d.get("skipped_blocks") or 0)  # a recording distilled again (docs review s34 L3: the line said no more)
    why = str(d.get("failed") or "") or (reasons[0] if reasons else "") or (
        ALREADY_DISTILLED if skipped else f"no block distilled ({int(d.get('sifted_bits') or 0):,} sifted bits)")
    more = len(reasons) - (0 if d.get("failed") else 1)
    return " ".join(why.split()) + (f" (+{more} more block(s) aborted)" if more > 0 else "")


def _grouped(why: dict[str, str], n_pairs: int) -> str:
    """``pair: reason`` items, the pairs of one reason named once before it ("C1-C2, C1-C3: …"; "all 6 pairs
    (C1-C2, …): …"); review s36 F21: a second ``distill`` of a recording repeated one 200-character reason 6×."""
    groups: dict[str, list[str]] = {}
    for pair, reason in why.items():
        groups.setdefault(reason, []).append(pair)
    return "; ".join((f"all {n_pairs} pairs ({', '.join(pairs)})" if len(pairs) == n_pairs > 1 else ", ".join(pairs))
                     + f": {reason}" for reason, pairs in groups.items())


def judge_key(out: dict[str, Any]) -> None:
    """Judge a distillation's summary ``out`` (its ``pairs``: name → ``final_key_bits``, ``abort_reasons``,
    ``failed``): no pair with key → ``out["error"] = "no pair produced key: <pairs: reason; …>"``; some pairs
    without → ``out["warning"]``. The pairs of one reason are named together, the reason once. The caller emits
    ``out`` and then calls :func:`key_verdict_exit`."""
    pairs = out["pairs"]
    none = {p: _why_no_key(d) for p, d in pairs.items() if not d["final_key_bits"]}
    listed = _grouped(none, len(pairs))
    if none and len(none) == len(pairs):
        out["error"] = f"no pair produced key: {listed}"
    elif none:
        out["warning"] = f"no key from {len(none)} of {len(pairs)} pairs: {listed}"


def key_verdict_exit(out: dict[str, Any]) -> None:
    """After ``out`` was emitted: its ``warning`` as a line on stderr; its ``error`` as the one error line and
    exit 1 (a run that made no key at all is a failure for scripts and schedulers)."""
    if "warning" in out:
        console.print(f"warning: {out['warning']}", soft_wrap=True, markup=False)
    if "error" in out:
        raise fail(out["error"])


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one clear error line and return the Exit to raise: ``raise fail("...")``. With ``--json`` the
    failure is on stdout too, as one JSON document (:func:`print_failure_json`), unless the command wrote its
    own already (``distill``, ``run`` and others put an ``error`` in their JSON; :func:`mark_json_sent`)."""
    import click

    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)  # text, not markup
    ctx = click.get_current_context(silent=True)
    if ctx is not None and json_requested(ctx) and not ctx.meta.get(JSON_SENT):
        print_failure_json(message, code, ctx.command_path)
        ctx.meta[JSON_SENT] = True
    return typer.Exit(code)


def pct_cell(v: float | None) -> str:
    """A rate (a fraction) as a table cell: a percentage, "—" for no value — the one format of the QBER
    columns of acquire, distill and the node tables (their JSON keeps fractions)."""
    return "—" if v is None else f"{100 * v:.2f} %"




def rate_clicks_cell(rate: float | None, clicks: int | None) -> str:
    """An error rate as a table cell with the clicks it is over: "1.56 % (12,345)"; "n/a (5 clicks)" ("n/a (1 click)")
    below :data:`MIN_TEST_CLICKS`; the bare rate (:func:`pct_cell`) where the count is unknown (a summary without
    counts). The one format of the test-data error rates of acquire, distill and the GUI's Live tab."""
    if clicks is None:
        return pct_cell(rate)
    if clicks < MIN_TEST_CLICKS:
        return f"n/a ({clicks:,} click{'' if clicks == 1 else 's'})"
    return f"{pct_cell(rate)} ({clicks:,})"


def check_duration(value: float, option: str = "--duration") -> None:
    """Refuse an acquisition length ``option`` outside (0, MAX_DURATION_S] in one line
    (:func:`labqfl.contracts.types.duration_problem`)."""
    from labqfl.contracts.types import duration_problem

    if (problem := duration_problem(value)) is not None:
        raise fail(f"{option} {problem}")


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether parameter ``name`` was typed on the command line (not its default, nor its environment
    variable): an option read from ``$LABQFL_DATA_DIR`` is the default data dir, not a user's choice."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written under ``folder`` (created if missing), or None: its nearest existing
    ancestor is a file, or a temporary file cannot be made there (removed at once; nothing is left)."""
    import tempfile

    anc = folder.absolute()
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"{anc} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as exc:
        return f"cannot write in {anc} ({exc.strerror or exc})"
    return None


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before any instrument is opened or acquisition
    made (CLI review s32 L10: ``acquire --out /proc/a.h5`` refused after acquiring)."""
    if (problem := _unwritable(path.parent)) is not None:
        raise fail(f"{option} {path}: {problem}; expected a file in a writable folder")


def check_runs_dir(out: Path | None) -> None:
    """Refuse a runs folder (``--out``, else ``$LABQFL_RUNS_DIR`` or ./runs) that is a file or cannot be
    written, before any instrument is opened (:meth:`labqfl.runs.RunRecord.create` refuses it too,
    but only after the measurement)."""
    from labqfl.runs import default_runs_dir

    base = out if out is not None else default_runs_dir()
    problem = "a file, not a folder" if base.exists() and not base.is_dir() else _unwritable(base)
    if problem is not None:
        raise fail(f"runs folder {base}: {problem}; expected a folder for run folders (--out, or $LABQFL_RUNS_DIR)")


def _safe_state_note() -> str:
    """"; instruments were put in their safe state" when this process opened a guarded station (its
    SIGINT handler did that, :mod:`labqfl.station`), else nothing: a key-store command has none."""
    station = sys.modules.get("labqfl.station")
    return "; instruments were put in their safe state" if station is not None and station.guard_was_used() else ""


def quiet_half_built_objects() -> None:
    """After an interrupt, the garbage collector's complaint about an llvmlite object the interrupt stopped
    in its constructor is not printed (:func:`labqfl.station.half_built_by_interrupt`); anything else is.
    Installed once, as soon as the interrupt is known (:func:`handle_errors`, before the one error line is
    printed: a collection while printing it showed a ``PipelineTuningOptions`` complaint, clean-clone CI of
    session 35) and again at the CLI's exit."""
    from labqfl.station import half_built_by_interrupt

    prev = sys.unraisablehook
    if getattr(prev, "labqfl_quiet", False):
        return

    def hook(info: Any) -> None:
        if not half_built_by_interrupt(info):
            prev(info)

    hook.labqfl_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def handle_errors(fn: F) -> F:
    """Decorator for command functions: LabqflError / OSError / ValueError / OverflowError / Ctrl-C → one line,
    non-zero exit. The command runs inside :func:`labqfl.station.sigint_as_interrupt`: a Ctrl-C while Numba
    compiles (a first run after an install) is raised once the compilation is over, not inside it (issue 19: a
    deadlock on llvmlite's LLVM lock)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from labqfl.station import sigint_as_interrupt

        try:
            with sigint_as_interrupt():
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except LabqflError as exc:
            raise fail(str(exc)) from None
        except (KeyboardInterrupt, SystemError) as exc:  # SystemError: Ctrl-C inside a C callback (Numba)
            if not interrupt_inside(exc):
                raise
            quiet_half_built_objects()  # before the line is printed: objects the interrupt left half-built
            if exc.args == ("SIGTERM",):  # labqfl.nodes.runjob.terminate_as_interrupt: stopped, not Ctrl-C
                raise fail("terminated (SIGTERM)" + _safe_state_note(), EXIT_TERMINATED) from None
            raise fail("interrupted by user (Ctrl-C)" + _safe_state_note(), EXIT_INTERRUPTED) from None
        except (OSError, ValueError) as exc:
            raise fail(f"{exc.__class__.__name__}: {exc}") from None
        except OverflowError as exc:  # from a value no check caught (review s36 input F2); other bugs keep a traceback
            raise fail(f"{exc.__class__.__name__}: {exc} (a value in the input is out of range; check the "
                       "station file with `labqfl station show`)") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(enabled: bool = True, *, percent: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr (hidden when ``enabled`` is False). ``percent`` shows a
    percentage instead of "done/total" (for fractional totals such as seconds).

    Only the description wraps (a long word, such as a path, folds onto the next line); the bar, the count
    and the times are never shrunk: rich shrank every column alike, and at 80 columns ``labqfl run`` showed
    its phases' elapsed times as ``1…`` and the report path as ``report.h…`` (review s36 F16). The bar is 40
    cells wide from 120 columns on, down to 10 at 90 and below."""
    fixed = Column(no_wrap=True)
    prog = Progress(
        SpinnerColumn(table_column=fixed),
        TextColumn("[progress.description]{task.description}", table_column=Column(overflow="fold")),
        BarColumn(bar_width=max(10, min(40, console.width - 80)), table_column=fixed),
        (TaskProgressColumn if percent else MofNCompleteColumn)(table_column=fixed),
        TimeElapsedColumn(table_column=fixed),
        TimeRemainingColumn(table_column=fixed),
        console=console,
        transient=False,
        disable=not enabled,
    )
    prog.start()
    try:
        yield prog
    finally:
        # rich ends a bar on a non-terminal with an empty line; with no task shown (an option refused
        # first) that line would stand alone above the error, so the console is quiet while it stops
        quiet = console.quiet
        console.quiet = quiet or not prog.tasks
        try:
            prog.stop()
        finally:
            console.quiet = quiet
