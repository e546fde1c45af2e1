"""``labqfl gui [--config]``: the testbed's window; ``--screenshot FILE.png [--after S] [--tab NAME]``:
a headless run on the (simulated) station that saves a picture of the main window and exits.
``--nodes local`` / ``--connect ADDRESSES_FILE --certs DIR``: open on the Nodes panel, which starts
a local set of node processes or connects to running nodes (docs/gui.md, docs/nodes.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    check_duration,
    console,
    emit,
    fail,
    given_on_command_line,
    handle_errors,
)

TAB_NAMES = ("station", "live", "calibration", "training", "nodes", "log")


@handle_errors
def _no_display() -> bool:
    """True on Linux without X11/Wayland and without an explicit Qt platform (Qt would abort)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@handle_errors
def gui(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    screenshot: Path | None = typer.Option(None, "--screenshot", dir_okay=False,
                                           help="Headless: run, save a PNG of the main window to this file, exit."),
    after: float = typer.Option(10.0, "--after", min=0.0, help="Seconds of live running before the screenshot."),
    tab: str | None = typer.Option(None, "--tab",
                                   help="Tab(s) to capture: station, live, calibration, training, nodes, log, a comma "
                                        "list, or 'all' (several tabs: FILE_TAB.png each). Default: live, or nodes "
                                        "with --nodes/--connect."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Key store directory (default: the per-user data dir; with --screenshot a "
                                              "temporary one unless --data-dir is on the command line)."),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="Runs directory for calibration/distillation run folders."),
    rounds: int = typer.Option(12, "--rounds", min=1, help="Training rounds shown in a training screenshot."),
    nodes: str | None = typer.Option(None, "--nodes", metavar="local",
                                     help="The one value is 'local': open on the Nodes panel and start a local set "
                                          "of node processes of the station (--config): optics, detector, every "
                                          "client, on loopback."),
    connect: Path | None = typer.Option(None, "--connect", metavar="ADDRESSES_FILE", dir_okay=False,
                                        help="Open on the Nodes panel connected to running nodes: a file with one "
                                             "NAME=HOST:PORT per line (needs --certs)."),
    certs: Path | None = typer.Option(None, "--certs", file_okay=False,
                                      help="With --connect: the operator's certificate folder (ca.pem, node-ctl.pem/.key)."),
    duration: float | None = typer.Option(None, "--duration", help="Nodes panel: acquisition length [s] (> 0)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Operate the Sagnac testbed from a window (station, live plots, calibration, training, nodes, log)."""
    node_mode = _node_mode(nodes, connect, certs, duration)
    if screenshot is not None and not given_on_command_line(ctx, "data_dir"):
        data_dir = None  # a screenshot's simulated keys stay out of $LABQFL_DATA_DIR's stores
    if tab is None:
        tab = "nodes" if node_mode else "live"
    if screenshot is None:
        if as_json:
            raise fail("--json is only meaningful with --screenshot")
        if _no_display():
            raise fail("no display to open the window on: set DISPLAY (or WAYLAND_DISPLAY), run under Xvfb "
                       "(xvfb-run labqfl gui), or take a headless picture with --screenshot FILE.png")
        from labqfl.gui.app import run_gui

        code = run_gui(config, data_dir=data_dir, runs_dir=out, nodes=node_mode, addresses=connect, certs=certs,
                       duration=duration)
        raise typer.Exit(code)
    tabs = list(TAB_NAMES) if tab.strip() == "all" else [t.strip() for t in tab.split(",") if t.strip()]
    bad = [t for t in tabs if t not in TAB_NAMES]
    if bad or not tabs:
        raise fail(f"--tab {tab!r}: expected one or more of {', '.join(TAB_NAMES)} (comma-separated) or 'all'")
    if screenshot.suffix.lower() != ".png":
        raise fail(f"--screenshot {screenshot}: expected a file name ending in .png")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from labqfl.gui.app import screenshot as take

    if not as_json:
        console.print(f"running the GUI headless for {after:g} s, tabs: {', '.join(tabs)}…")
    try:
        report = take(screenshot, config_path=config, after_s=after, tabs=tabs, data_dir=data_dir, runs_dir=out,
                      training_rounds=rounds, nodes=node_mode, addresses=connect, certs=certs, duration=duration)
    except RuntimeError as exc:
        raise fail(str(exc)) from None

    failed = report.get("nodes_error")

    def render(con) -> None:  # type: ignore[no-untyped-def]
        for p in report["screenshots"]:
            con.print(f"saved {p}", soft_wrap=True)  # a path broken over two lines can be neither copied nor read
        for e in report["errors"]:
            if failed and e["title"] == "Nodes" and e["message"] in failed:
                continue  # the error line below says it
            con.print(f"[yellow]error shown during the run:[/] {escape(e['title'])}: {escape(e['message'])}", markup=True)

    emit(report, as_json, render)
    if failed:  # the other tabs' pictures were saved; the Nodes run failed: one line, exit 1
        raise fail(str(failed))


def _node_mode(nodes: str | None, connect: Path | None, certs: Path | None, duration: float | None) -> str | None:
    """"local", "connect" or None from the node options; one clear error line for a bad combination,
    a malformed addresses file or an unusable certificate folder (checked before any window opens)."""
    if nodes is not None and nodes != "local":
        raise fail(f"--nodes {nodes!r}: expected 'local' (to connect to running nodes: --connect FILE --certs DIR)")
    if nodes is not None and connect is not None:
        raise fail("--nodes local and --connect exclude each other: start a local set or connect to running nodes")
    if connect is not None and certs is None:
        raise fail(f"--connect {connect}: also give --certs DIR, the operator's certificate folder")
    if certs is not None and connect is None:
        raise fail("--certs is only meaningful with --connect ADDRESSES_FILE")
    if duration is not None:
        check_duration(duration)
    if connect is not None and certs is not None:
        from labqfl.app.nodes import operator_credentials, read_addresses

        read_addresses(connect)  # ConfigError → one line (handle_errors)
        operator_credentials(certs)
        return "connect"
    return "local" if nodes is not None else None


def register(app: typer.Typer) -> None:
    app.command("gui")(gui)
