"""The ``labqfl`` command line (typer + rich). Each command lives in its own module in this
package and exposes ``register(app)``; add the module name to ``COMMAND_MODULES``."""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any, NoReturn

import click
import typer
import typer.core

from labqfl import __version__
from labqfl.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, JSON_SENT, print_failure_json
from labqfl.cli.common import quiet_half_built_objects as _quiet_half_built_objects
from labqfl.cli.helpfmt import install as _install_help_layout
from labqfl.log import set_verbosity

#: Modules under ``labqfl.cli`` that register commands, in help order.
COMMAND_MODULES: list[str] = [
    "run",
    "report",
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

_install_help_layout()  # every --help readable at 80 columns: no option name or help word cut with "…"

#: ``-v``/``--verbose`` after a command (``labqfl keys status -v``) does what it does before it (review s40 user
#: LOW-2: "No such option '-v'"); hidden from each command's help, which the root's help documents it in
VERBOSE_NAMES = ("-v", "--verbose")


def _verbose_after_command(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """A command's own ``-v``: the verbosity counts the flags given before the command too (``labqfl -v keys
    status -v`` is ``-vv``)."""
    if value:
        before = ctx.find_root().params.get("verbose") or 0
        set_verbosity(["WARNING", "INFO", "DEBUG"][min(before + value, 2)])


def _add_verbose(cmd: click.Command) -> None:
    """Give ``cmd`` and, for a group, each command under it the hidden ``-v``/``--verbose`` count flag (none that
    already has an option of those names)."""
    if not any(set(VERBOSE_NAMES) & set(getattr(p, "opts", ())) for p in cmd.params):
        cmd.params.append(click.Option(list(VERBOSE_NAMES), count=True, hidden=True, expose_value=False,
                                       callback=_verbose_after_command, help="As labqfl -v."))
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _add_verbose(sub)


class _RootGroup(typer.core.TyperGroup):
    """The ``labqfl`` group: every command under it takes the global ``-v`` after its name too."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for sub in self.commands.values():
            _add_verbose(sub)


app = typer.Typer(
    cls=_RootGroup,
    name="labqfl",
    help="Federated learning with secure aggregation masked by QKD keys, over a QKD network testbed (Sagnac loop); "
         "what each key's security rests on is stated with it (`labqfl keys status`).",
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
    # metavar "" and no default: typer's help would show a count as "INTEGER [default: 0]", which reads as
    # `labqfl -v 2` (review s34 L6); it is a repeated flag
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, metavar="", show_default=False,
                                help="More log output on stderr: -v info, -vv debug (repeat the flag; it takes no value)."),
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
    args = sys.argv[1:]
    try:
        code = app(args=args, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `labqfl` or `labqfl keys` alone: typer printed the help
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:  # one line, as every other failure (not click's boxed usage)
        where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        _fail_outside_command(f"{_usage_text(exc)}{where}", exc.exit_code, args, exc.ctx)
    except click.exceptions.Abort:  # Ctrl-C at a prompt or before a command's own handler runs
        _fail_outside_command("interrupted by user (Ctrl-C)", EXIT_INTERRUPTED, args, None)
    except click.ClickException as exc:
        _fail_outside_command(exc.format_message(), exc.exit_code, args, None)
    if code == EXIT_TERMINATED:  # on its way out after a SIGTERM, its state saved and its line printed: another
        signal.signal(signal.SIGTERM, _ignore)  # SIGTERM during the interpreter's teardown must not end it with -15
    if code in (EXIT_TERMINATED, EXIT_INTERRUPTED):  # objects an interrupt left half-built are collected at exit
        _quiet_half_built_objects()
    sys.exit(code if isinstance(code, int) else 0)


def _fail_outside_command(message: str, code: int, args: list[str], ctx: click.Context | None) -> NoReturn:
    """A failure that no command's handler saw (a usage error, an Abort): the one ``error:`` line on stderr and,
    where ``--json`` is on the command line (options end at ``--``), the failure as one JSON document on stdout, as
    :func:`labqfl.cli.common.fail` gives inside a command (issue 19: a bad option value with ``--json`` gave an
    empty stdout); then exit ``code``."""
    click.echo(f"error: {message}", err=True)
    options = args[:args.index("--")] if "--" in args else args
    if "--json" in options and not (ctx is not None and ctx.meta.get(JSON_SENT)):
        print_failure_json(message, code, ctx.command_path if ctx is not None else app.info.name)
    sys.exit(code)


def _usage_text(exc: click.UsageError) -> str:
    """The message of a usage error, a suggestion said once: for a mistyped command typer writes its "Did you
    mean …?" into the message and click ≥ 8.2 appends its own from the same possibilities (``NoSuchCommand``),
    so ``labqfl staton`` printed "Did you mean 'station'? Did you mean 'station'?" (review s36 F19)."""
    if "Did you mean" in exc.message and getattr(exc, "possibilities", None):
        return exc.message
    return exc.format_message()


def _ignore(signum: int, frame: object) -> None:
    """A SIGTERM while the process exits after the first one (Python-level: not inherited like SIG_IGN)."""
