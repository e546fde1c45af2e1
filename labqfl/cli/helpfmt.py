"""The options panel of every command's ``--help``, laid out so that nothing is cut at 80 columns.

typer's own panel (``typer.rich_utils._print_options_panel``) puts each option in six columns (long names,
short names, ``--no-…`` names, their short names, the metavar, the help); in an 80-column terminal rich
shrinks all six below their widest word and cuts them with "…": ``labqfl run --help`` showed
``--no-auth-boots…`` and ``--no-wait-for-k…``, and help words such as ``labqfl.qkd.block…``. Here each option
takes two columns: its names, one form a line (``--wait-for-key`` above ``--no-wait-for-key``, the short
names beside the long ones, the metavar below), never wrapped nor shortened, and its help, which takes the
rest of the width and wraps (a word longer than the column is folded onto the next line, not cut).
:func:`install` puts it in typer's place; a typer whose panel takes other arguments keeps its own."""

from __future__ import annotations

import inspect
from typing import Any

import click
import typer.rich_utils as ru
from rich.cells import cell_len
from rich.columns import Columns
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["install"]

#: the keyword arguments of the typer function this module replaces (typer 0.12 … 0.20)
_PANEL_ARGS = {"name", "params", "ctx", "markup_mode", "console"}


def _metavar(param: click.Parameter, ctx: click.Context) -> str:
    """The option's metavar as typer shows it (a boolean flag none; a number range appended)."""
    if "ctx" in inspect.signature(param.make_metavar).parameters:
        mv = param.make_metavar(ctx=ctx)  # type: ignore[call-arg,unused-ignore]
    else:  # click < 8.2
        mv = param.make_metavar()  # type: ignore[call-arg,unused-ignore]
    if isinstance(param, click.Argument) and param.name and mv == param.name.upper():
        mv = param.type.name.upper()
    mv = "" if mv == "BOOLEAN" else mv
    if (isinstance(param.type, click.types._NumberRangeBase) and isinstance(param, click.Option)
            and not (param.count and param.type.min == 0 and param.type.max is None)):
        rng = param.type._describe_range()
        mv += ru.RANGE_STRING.format(rng) if rng else ""
    return mv


def _names(param: click.Parameter, ctx: click.Context) -> tuple[Text, int]:
    """The names cell of ``param`` (its forms one a line, then its metavar) and the width of its widest name
    line (the metavar may fold; a name never does)."""
    lines = []
    for opts, hl in ((param.opts, ru.highlighter), (param.secondary_opts, ru.negative_highlighter)):
        longs, shorts = [o for o in opts if "--" in o], [o for o in opts if "--" not in o]
        if longs or shorts:
            lines.append(hl(", ".join(longs + shorts)))
    if param.required:
        lines[0] = Text.assemble(lines[0], " ", Text(ru.REQUIRED_SHORT_STRING, style=ru.STYLE_REQUIRED_SHORT))
    widest = max((t.cell_len for t in lines), default=0)
    if mv := _metavar(param, ctx):
        lines.append(Text(mv, style=ru.STYLE_METAVAR))
    cell = Text("\n").join(lines)
    cell.overflow = "fold"
    return cell, widest


def _print_options_panel(*, name: str, params: list[click.Parameter], ctx: click.Context, markup_mode: Any,
                         console: Console) -> None:
    """typer's options (or arguments) panel in two columns (module docstring)."""
    if not params:
        return
    cells = [_names(p, ctx) for p in params]
    width = max(w for _, w in cells)
    # the names column: as wide as its widest name, and no wider than a third of the panel (a long metavar folds)
    longest = max(cell_len(line) for c, _ in cells for line in c.plain.split("\n"))
    width = max(width, min(longest, (console.width - 4) // 3))
    table = Table(highlight=True, show_header=False, expand=True, box=None, padding=(0, 2, 0, 0),
                  pad_edge=False, show_lines=ru.STYLE_OPTIONS_TABLE_SHOW_LINES,
                  leading=ru.STYLE_OPTIONS_TABLE_LEADING)
    table.add_column(width=width, no_wrap=False, overflow="fold")
    table.add_column(ratio=1, overflow="fold")
    for p, (cell, _) in zip(params, cells, strict=True):
        help_ = ru._get_parameter_help(param=p, ctx=ctx, markup_mode=markup_mode)
        # typer's Columns renders each part in a column of its own that cuts a long word: stack the parts
        table.add_row(cell, Group(*help_.renderables) if isinstance(help_, Columns) else help_)
    console.print(Panel(table, border_style=ru.STYLE_OPTIONS_PANEL_BORDER, title=name,
                        title_align=ru.ALIGN_OPTIONS_PANEL))


def install() -> None:
    """Use :func:`_print_options_panel` for every command's help, where typer's panel takes the same
    arguments (else typer's own stays)."""
    original = getattr(ru, "_print_options_panel", None)
    if original is None or set(inspect.signature(original).parameters) != _PANEL_ARGS:
        return
    ru._print_options_panel = _print_options_panel  # type: ignore[assignment]
