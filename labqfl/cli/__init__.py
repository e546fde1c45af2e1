"""The ``labqfl`` command line (typer + rich). Each command lives in its own module in this
package and exposes ``register(app)``; add the module name to ``COMMAND_MODULES``."""

from __future__ import annotations

import importlib

import typer

from labqfl import __version__
from labqfl.log import set_verbosity

#: Modules under ``labqfl.cli`` that register commands, in help order.
COMMAND_MODULES: list[str] = [
    "run",
    "station",
    "plan",
    "bench",
    "keyrate",
    "keys",
    "acquire",
    "distill",
    "train",
    "gui",
    "calibrate",
    "node",
]

app = typer.Typer(
    name="labqfl",
    help="Quantum-secure federated learning over a QKD network testbed (Sagnac loop).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # "rich" would take a unit such as [s] or [dB] in a help text for a style tag
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labqfl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output on stderr (-v info, -vv debug)."),
) -> None:
    set_verbosity(["WARNING", "INFO", "DEBUG"][min(verbose, 2)])
    from labqfl.cli.compiling import KERNEL_COMMANDS, watch

    if ctx.invoked_subcommand in KERNEL_COMMANDS:
        watch()  # a first run after an install says that it compiles, and for how long


for _mod in COMMAND_MODULES:
    importlib.import_module(f"labqfl.cli.{_mod}").register(app)


def main() -> None:
    from labqfl.station import guard_stations

    guard_stations()  # a killed command leaves every instrument safe (SIGTERM/SIGINT/atexit)
    app()
