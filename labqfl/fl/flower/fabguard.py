"""Only labqfl's own Flower App runs in a labqfl SuperNode's ClientApp processes.

A Flower SuperNode does not hold the code it runs: for every message its SuperExec starts a
``flwr-clientapp`` process, which pulls the message, the run and the run's FAB (Flower App Bundle,
a zip) from the SuperNode, installs the FAB (``flwr.cli.install.install_from_fab``) and imports the
FAB's ``[tool.flwr.app.components] clientapp`` with the FAB's folder first on ``sys.path``
(flwr 1.42, ``flwr/supernode/runtime/run_clientapp.py``, ``run_clientapp``; the loader is
``flwr.clientapp.utils.get_load_client_app_fn``). The FAB is the SuperLink's, i.e. the server's,
choice: any Python it ships would run as the client, with the client's ``node_config``
(``labqfl-keystore``: its QKD key store; ``labqfl-key``: its certificate key). Flower's own defence,
``flower-supernode --trusted-entities``, needs FABs carrying Flower-platform license verifications
(``flwr/supernode/start_client_internal.py``, ``_verify_fab``), which an offline lab network does
not have.

:func:`main` is ``flwr-clientapp`` with two of ``run_clientapp``'s module globals replaced, before
anything is read from the FAB:

* ``install_from_fab``: :func:`check_fab` first checks the FAB's bytes (in memory: nothing is
  written or imported before the check) and raises :class:`ForeignFabError` for any FAB that is not
  labqfl's own; only then does Flower's own installer run. Flower turns that exception into an error
  reply (``CLIENT_APP_RAISED_EXCEPTION``, the reason names what was wrong), so the server gets an
  error and no data, and the node logs one ``labqfl FAB guard: refusing ...`` error line (then
  Flower's own "ClientApp raised an exception" with the traceback). Nothing of the node's key
  store, certificate key or files has been opened at that point: the ClientApp has not been loaded.
* ``get_load_client_app_fn``: the loader returns ``labqfl.fl.flower.app:client_app`` from the
  installed labqfl package, and only after this process has checked its FAB. It never puts the
  FAB's folder on ``sys.path`` and ignores the run's FAB id/version/hash (which the SuperLink
  states separately from the FAB's bytes), so neither a folder installed earlier under the same
  name nor a FAB module named ``labqfl`` can shadow the package. With only the two known files
  allowed (below), the FAB could not shadow it anyway: ``labqfl_flower_app.py`` is not ``labqfl``.

What a FAB may hold (labqfl's FAB is written by
:func:`labqfl.fl.flower.deploy.write_app_project` and built by ``flwr run``'s
``flwr.cli.build.build_fab_from_files``):

* exactly three zip members, each once: ``pyproject.toml``, ``labqfl_flower_app.py`` and Flower's
  manifest ``.info/CONTENT`` (``flwr build`` adds nothing else; it re-serialises the
  ``pyproject.toml`` with ``tomli_w``, so that file is compared as parsed TOML, not as bytes);
* ``labqfl_flower_app.py`` byte for byte :data:`~labqfl.fl.flower.deploy.APP_STUB`;
* a ``pyproject.toml`` equal to :data:`~labqfl.fl.flower.deploy.APP_PYPROJECT` in everything but
  the ``[tool.flwr.app.config]`` table (the run config: data, which the ClientApp checks itself):
  in particular components ``clientapp = "labqfl.fl.flower.app:client_app"`` and ``serverapp =
  "labqfl.fl.flower.app:server_app"`` and no dependencies (runtime dependency installation would
  run the packages' build code);
* a manifest that lists exactly those two files with their SHA-256.

A SuperNode that labqfl starts (:meth:`labqfl.fl.flower.deploy.LocalFederation.start_supernode`,
``labqfl node supernode``) finds :func:`write_node_bin`'s folder first on its ``PATH``: there
``flwr-clientapp`` is this guard, and every other program a Flower SuperExec may start for a task
(``flwr-agentapp``, ``flwr-serverapp``, ...: a server-chosen run type such as an AgentApp run would
otherwise start one of those with the same FAB) exits at once with an error. The warm ClientApp
zygote (:mod:`labqfl.nodes.warmapp`) runs :func:`main` in each child, and its shim's cold path
``exec``\\ s this folder's ``flwr-clientapp``. A hand-started ``flower-supernode`` gets the same with
``python -m labqfl.fl.flower.fabguard write-bin DIR`` and ``PATH=DIR:$PATH`` (docs/flower.md).

That folder's ``flower-superexec`` (:func:`superexec_main`; the warm zygote runs it too) keeps
Flower's runtime token off the ClientApps' command lines: flwr 1.42's ``SubprocessExecutor``
starts ``flwr-clientapp ... --token TOKEN``, readable by every local user in
``/proc/PID/cmdline``, and the token alone lets a process pull the ClientApp's task (its Context)
from the SuperNode's runtime API and make the real ClientApp fail (review s35 F5). Here the
command line says :data:`TOKEN_STDIN` and the token goes down a pipe on the ClientApp's standard
input, where :func:`main` reads it (:func:`token_from_stdin`). A SuperLink labqfl starts finds
:func:`write_server_bin`'s folder first on its ``PATH``: the same SuperExec, and a ``flwr-serverapp``
that reads its token from stdin (:func:`serverapp_main`).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from logging import ERROR
from pathlib import Path
from typing import Any

from labqfl.fl.flower.deploy import APP_PYPROJECT, APP_STUB, APP_STUB_NAME

__all__ = ["ALLOWED_FILES", "TOKEN_STDIN", "TOKEN_STDIN_PROGRAMS", "ForeignFabError", "check_fab", "install",
           "install_superexec", "main", "serverapp_main", "superexec_main", "token_from_stdin", "write_node_bin",
           "write_server_bin"]

#: the FAB's configuration file and Flower's manifest of the FAB's files (``flwr.cli.build``)
FAB_CONFIG = "pyproject.toml"
FAB_MANIFEST = ".info/CONTENT"
#: every member a FAB of labqfl's App has, and may have
ALLOWED_FILES = frozenset({FAB_CONFIG, APP_STUB_NAME, FAB_MANIFEST})
#: labqfl's components (``[tool.flwr.app.components]``)
CLIENT_APP_REF = "labqfl.fl.flower.app:client_app"
SERVER_APP_REF = "labqfl.fl.flower.app:server_app"
#: largest member read [bytes] (labqfl's pyproject with a full run config is ~2 KB)
MAX_MEMBER_BYTES = 1 << 20
#: Flower task programs a SuperExec starts by name (flwr 1.42 ``TASK_TYPE_TO_COMMAND``) other than
#: ``flwr-clientapp``: a labqfl SuperNode runs none of them
OTHER_TASK_PROGRAMS = ("flwr-agentapp", "flwr-connector", "flwr-model", "flwr-serverapp", "flwr-simulation")


class ForeignFabError(ValueError):
    """The FAB the SuperLink sent is not labqfl's App; nothing of it was installed or imported."""


def check_fab(content: bytes) -> str:
    """Raise :class:`ForeignFabError` naming what is wrong unless ``content`` is a FAB of labqfl's
    App (module docstring); returns its SHA-256 (hex). Reads only the bytes given."""
    digest = hashlib.sha256(content).hexdigest()
    try:
        _check_fab(content)
    except ForeignFabError as exc:
        raise ForeignFabError(f"refusing the Flower App the SuperLink sent (FAB sha256 {digest[:16]}...): {exc}; "
                              "a labqfl SuperNode runs only labqfl's own App (labqfl.fl.flower.fabguard)") from None
    return digest


def _check_fab(content: bytes) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ForeignFabError(f"it is not a zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        extra = sorted(set(names) - ALLOWED_FILES)
        if extra:
            raise ForeignFabError(f"it carries {extra}; labqfl's FAB holds only {sorted(ALLOWED_FILES)}")
        missing = sorted(ALLOWED_FILES - set(names))
        if missing:
            raise ForeignFabError(f"it lacks {missing}; labqfl's FAB holds exactly {sorted(ALLOWED_FILES)}")
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ForeignFabError(f"it holds {dups} more than once")
        big = [i.filename for i in infos if i.file_size > MAX_MEMBER_BYTES]
        if big:
            raise ForeignFabError(f"{big} larger than {MAX_MEMBER_BYTES} bytes")
        try:
            files = {n: zf.read(n) for n in sorted(ALLOWED_FILES)}
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ForeignFabError(f"a member cannot be read ({exc})") from None
    if files[APP_STUB_NAME] != APP_STUB:
        raise ForeignFabError(f"its {APP_STUB_NAME} differs from labqfl's stub module "
                              f"(sha256 {hashlib.sha256(files[APP_STUB_NAME]).hexdigest()[:16]}..., "
                              f"expected {hashlib.sha256(APP_STUB).hexdigest()[:16]}...)")
    check_pyproject(files[FAB_CONFIG])
    _check_manifest(files[FAB_MANIFEST], files)


def check_pyproject(raw: bytes) -> None:
    """Raise :class:`ForeignFabError` unless ``raw`` parses to labqfl's ``APP_PYPROJECT`` except
    for the ``[tool.flwr.app.config]`` table (the run config)."""
    try:
        got = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ForeignFabError(f"its {FAB_CONFIG} is not UTF-8 TOML ({exc})") from None
    want = tomllib.loads(APP_PYPROJECT.format(config=""))
    app = _table(got, "tool", "flwr", "app")
    comps = app.get("components")
    want_comps = {"clientapp": CLIENT_APP_REF, "serverapp": SERVER_APP_REF}
    if comps != want_comps:
        raise ForeignFabError(f"its [tool.flwr.app.components] are {comps!r}; labqfl's App has exactly {want_comps!r}")
    project = _table(got, "project")
    deps = {k: project[k] for k in ("dependencies", "optional-dependencies") if project.get(k)}
    deps.update({k: got[k] for k in ("dependency-groups",) if got.get(k)})
    if deps:
        raise ForeignFabError(f"it declares dependencies {deps!r}; labqfl's App declares none")
    config = app.get("config", {})
    if not isinstance(config, dict):
        raise ForeignFabError("its [tool.flwr.app] config is not a table")
    rest = {**got, "tool": {**got.get("tool", {}), "flwr": {**_table(got, "tool", "flwr"),
                                                            "app": {k: v for k, v in app.items() if k != "config"}}}}
    want["tool"]["flwr"]["app"].pop("config", None)
    diff = _differences(rest, want)
    if diff:
        raise ForeignFabError(f"its {FAB_CONFIG} differs from labqfl's App in {diff} (only the "
                              "[tool.flwr.app.config] table, the run config, may differ)")


def _table(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``doc[k1][k2]...`` if every step is a table, else {}."""
    node: Any = doc
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _differences(got: Any, want: Any, path: str = "") -> list[str]:
    """Dotted keys where ``got`` and ``want`` differ (at most 8)."""
    if isinstance(got, dict) and isinstance(want, dict):
        out: list[str] = []
        for k in sorted(set(got) | set(want), key=str):
            out += _differences(got.get(k, _MISSING), want.get(k, _MISSING), f"{path}.{k}" if path else str(k))
        return out[:8]
    return [] if got == want else [path or "<document>"]


_MISSING = object()


def _check_manifest(raw: bytes, files: dict[str, bytes]) -> None:
    """Flower's ``.info/CONTENT`` (``path,sha256,size in bits`` per line) must list exactly the
    two files with their hashes."""
    try:
        lines = raw.decode("utf-8").strip().split("\n")
        rows = [line.split(",") for line in lines]
        listed = {r[0]: r[1] for r in rows if len(r) == 3}
    except UnicodeDecodeError:
        rows, listed = [], {}
    expected = {n: hashlib.sha256(files[n]).hexdigest() for n in (FAB_CONFIG, APP_STUB_NAME)}
    if len(rows) != 2 or listed != expected:
        raise ForeignFabError(f"its {FAB_MANIFEST} does not list exactly {sorted(expected)} with their SHA-256")


# ------------------------------------------------------------------ the hooks in flwr-clientapp
#: SHA-256 of the FAB this process checked (the loader loads nothing before a check passed)
_CHECKED: list[str] = []


def _log_error(text: str) -> None:
    from flwr.supercore import log

    log(ERROR, "labqfl FAB guard: %s", text)


def _guarded_install(real: Callable[..., Path]) -> Callable[..., Path]:
    """Flower's ``install_from_fab`` behind :func:`check_fab`."""

    def install_from_fab(fab_file: Path | bytes, install_dir: Path | None = None, skip_prompt: bool = False) -> Path:
        if not isinstance(fab_file, bytes):
            raise ForeignFabError(f"labqfl's FAB guard checks a FAB's bytes, got {type(fab_file).__name__}")
        try:
            digest = check_fab(fab_file)
        except ForeignFabError as exc:
            _log_error(str(exc))
            raise
        _CHECKED.append(digest)
        return real(fab_file, install_dir=install_dir, skip_prompt=skip_prompt)

    install_from_fab.labqfl_guard = True  # type: ignore[attr-defined]
    return install_from_fab


def _pinned_loader(default_app_ref: str, app_path: str | None, multi_app: bool) -> Callable[[str, str, str], Any]:
    """Stands for ``flwr.clientapp.utils.get_load_client_app_fn``: the loader it returns gives
    labqfl's ClientApp, from the installed package, once this process checked its FAB."""
    del default_app_ref, app_path, multi_app

    def load(fab_id: str, fab_version: str, fab_hash: str) -> Any:
        from flwr.clientapp.client_app import ClientApp, LoadClientAppError

        if not _CHECKED:
            raise LoadClientAppError(f"labqfl FAB guard: no FAB of run {fab_id} {fab_version} was checked in "
                                     "this process; refusing to load a ClientApp")
        from labqfl.fl.flower.app import client_app

        if not isinstance(client_app, ClientApp):
            raise LoadClientAppError(f"{CLIENT_APP_REF} is not a ClientApp")
        return client_app

    return load


def install() -> None:
    """Replace ``install_from_fab`` and ``get_load_client_app_fn`` in flwr's ``run_clientapp``
    module (idempotent). A Flower without them is refused (RuntimeError): no ClientApp runs."""
    from flwr.supernode.runtime import run_clientapp as rc

    missing = [n for n in ("install_from_fab", "get_load_client_app_fn", "run_clientapp") if not hasattr(rc, n)]
    if missing:
        raise RuntimeError(f"flwr's {rc.__name__} has no {missing}: labqfl's FAB guard was written for flwr 1.42's; "
                           "refusing to run any ClientApp")
    if not getattr(rc.install_from_fab, "labqfl_guard", False):
        rc.install_from_fab = _guarded_install(rc.install_from_fab)  # type: ignore[assignment]
    rc.get_load_client_app_fn = _pinned_loader  # type: ignore[assignment]


def installed() -> bool:
    """Whether this process runs behind the guard (:func:`install` ran: a ClientApp of a deployed SuperNode
    started with labqfl's bin folder on its ``PATH``), without importing Flower's runtime if it did not."""
    rc = sys.modules.get("flwr.supernode.runtime.run_clientapp")
    return rc is not None and bool(getattr(getattr(rc, "install_from_fab", None), "labqfl_guard", False))


def main() -> int:
    """``flwr-clientapp`` (arguments in ``sys.argv``) behind the guard; returns its exit code.
    With :data:`TOKEN_STDIN` the runtime token comes on standard input (:func:`token_from_stdin`)."""
    try:
        install()
        sys.argv = token_from_stdin(sys.argv)
    except (RuntimeError, ValueError) as exc:
        _log_error(str(exc))
        return 1
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()
    return 0


# ------------------------------------------------------------------ the runtime token off the command line
#: option of labqfl's ``flwr-clientapp`` and ``flwr-serverapp``: the runtime token is the first line of
#: standard input (Flower's own ``--token-stdin`` convention for its other workers, flwr/common/args.py)
TOKEN_STDIN = "--token-stdin"
#: the programs labqfl's SuperExec (:func:`install_superexec`) starts with :data:`TOKEN_STDIN`: a SuperNode's
#: ClientApps (this guard) and a server node's ServerApps (:func:`serverapp_main`)
TOKEN_STDIN_PROGRAMS = ("flwr-clientapp", "flwr-serverapp")


def token_from_stdin(argv: list[str]) -> list[str]:
    """``argv`` with :data:`TOKEN_STDIN` replaced by ``--token TOKEN``, the token read from file
    descriptor 0 (one line of hex, flwr's ``secrets.token_hex(FLWR_TASK_TOKEN_LENGTH)``); ``argv``
    unchanged without that option. Only this process's ``sys.argv`` gets the token: the kernel's
    copy of the command line (``/proc/PID/cmdline``, which every local user can read) never does.
    Raises ValueError unless standard input holds exactly one such token."""
    if TOKEN_STDIN not in argv[1:]:
        return argv
    from flwr.common.constant import FLWR_TASK_TOKEN_LENGTH

    want = 2 * FLWR_TASK_TOKEN_LENGTH
    data = b""
    while b"\n" not in data and len(data) < want + 2:
        chunk = os.read(0, want + 2 - len(data))
        if not chunk:
            break
        data += chunk
    token = data.decode("ascii", errors="replace").removesuffix("\n")
    if len(token) != want or any(c not in "0123456789abcdef" for c in token):
        raise ValueError(f"{TOKEN_STDIN}: standard input does not hold one runtime token ({want} hex digits "
                         f"and a newline; got {len(data)} bytes)")
    i = argv.index(TOKEN_STDIN, 1)
    return [*argv[:i], "--token", token, *argv[i + 1:]]


class _TokenOnStdin:
    """The ``subprocess`` module as flwr's ``SubprocessExecutor.launch`` sees it in labqfl's SuperExec
    (:func:`install_superexec`): a :data:`TOKEN_STDIN_PROGRAMS` command line's ``--token TOKEN``
    becomes :data:`TOKEN_STDIN` and the token goes down a pipe on the process's standard input.
    Every other command, and everything else of the module, is the real one.

    Such a command with a standard input of the caller's own (``stdin`` not None) is refused
    (ValueError, naming the program), never started with the token on its command line (issue 19:
    it was passed on unchanged); so is one with the token as ``--token=TOKEN``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:  # noqa: N802 - stands for subprocess.Popen
        argv = [str(a) for a in args]
        if not argv or Path(argv[0]).name not in TOKEN_STDIN_PROGRAMS or not any(
                a == "--token" or a.startswith("--token=") for a in argv[1:]):
            return subprocess.Popen(args, **kwargs)  # noqa: S603 - flwr's own command, unchanged
        prog = Path(argv[0]).name
        inline = any(a.startswith("--token=") for a in argv[1:])
        if kwargs.get("stdin") is not None or inline or "--token" not in argv[1:-1]:
            what = ("its caller passed its own standard input" if kwargs.get("stdin") is not None
                    else "its token is not given as '--token TOKEN'")
            raise ValueError(f"refusing to start {prog}: {what}, so its runtime token could only go on its command "
                             f"line (readable by every local user in /proc/PID/cmdline); labqfl's SuperExec sends "
                             f"it on standard input ({TOKEN_STDIN}) and expects '--token TOKEN' and no stdin")
        kwargs.pop("stdin", None)
        i = argv.index("--token", 1)
        token = argv[i + 1]
        argv[i:i + 2] = [TOKEN_STDIN]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, **kwargs)  # noqa: S603 - flwr's command, token moved
        assert proc.stdin is not None
        try:
            proc.stdin.write(token.encode("ascii") + b"\n")  # < PIPE_BUF: never blocks on a fresh pipe
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the process already exited; flwr's executor learns that as for any failed ClientApp
        return proc


def install_superexec() -> None:
    """Make flwr's ``SubprocessExecutor`` (this process: the ``flower-superexec`` of a labqfl SuperNode
    or server node) start ``flwr-clientapp`` and ``flwr-serverapp`` with the runtime token on standard
    input, not in argv (flwr 1.42's ``launch`` puts ``--token TOKEN`` on the command line, readable by
    every local user in ``/proc/PID/cmdline``; with it any local process could pull the app's task,
    a ClientApp's Context, and make the real app fail). A Flower without that module layout is
    refused (RuntimeError): no app starts with its token exposed."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType
    from flwr.supercore.superexec.executor import subprocess_executor as se

    current = getattr(se, "subprocess", None)
    named = (TASK_TYPE_TO_COMMAND.get(TaskType.CLIENT_APP), TASK_TYPE_TO_COMMAND.get(TaskType.SERVER_APP))
    if named != TOKEN_STDIN_PROGRAMS or not (current is subprocess or isinstance(current, _TokenOnStdin)):
        raise RuntimeError(f"flwr's {se.__name__} does not start {TOKEN_STDIN_PROGRAMS} through subprocess.Popen as flwr "
                           "1.42's does: labqfl cannot keep the runtime token off its command line; refusing to "
                           "start a SuperExec")
    se.subprocess = _TokenOnStdin()  # type: ignore[assignment]


def superexec_main() -> int:
    """``flower-superexec`` (arguments in ``sys.argv``) of a labqfl SuperNode or server node, after
    :func:`install_superexec`; returns its exit code."""
    try:
        install_superexec()
    except RuntimeError as exc:
        _log_error(str(exc))
        return 1
    from flwr.supercore.cli import flower_superexec

    flower_superexec()
    return 0


def serverapp_main() -> int:
    """Flower's ``flwr-serverapp`` (arguments in ``sys.argv``) taking its runtime token from standard
    input with :data:`TOKEN_STDIN` (:func:`token_from_stdin`); returns its exit code."""
    try:
        sys.argv = token_from_stdin(sys.argv)
    except ValueError as exc:
        _log_error(str(exc))
        return 1
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    flwr_serverapp()
    return 0


# ------------------------------------------------------------------ the SuperNode's PATH
GUARD_SCRIPT = """#!{python}
# labqfl FAB guard (labqfl/fl/flower/fabguard.py): Flower's flwr-clientapp, refusing every FAB
# that is not labqfl's own App before installing or importing anything from it.
import sys
from labqfl.fl.flower.fabguard import main
sys.exit(main())
"""

REFUSE_SCRIPT = """#!{python} -SE
# labqfl (labqfl/fl/flower/fabguard.py): a labqfl SuperNode runs only labqfl's ClientApp.
import sys
sys.stderr.write("labqfl SuperNode: refusing to start {prog} {{}}: a labqfl SuperNode runs only labqfl's "
                 "ClientApp (flwr-clientapp); the SuperLink asked for another kind of task\\n".format(sys.argv[1:2]))
sys.exit(1)
"""


SUPEREXEC_SCRIPT = """#!{python}
# labqfl (labqfl/fl/flower/fabguard.py): Flower's flower-superexec, starting every flwr-clientapp and
# flwr-serverapp with its runtime token on standard input instead of on its command line.
import sys
from labqfl.fl.flower.fabguard import superexec_main
sys.exit(superexec_main())
"""


SERVERAPP_SCRIPT = """#!{python}
# labqfl (labqfl/fl/flower/fabguard.py): Flower's flwr-serverapp, its runtime token on standard input.
import sys
from labqfl.fl.flower.fabguard import serverapp_main
sys.exit(serverapp_main())
"""


def _write_scripts(bin_dir: Path, scripts: dict[str, str]) -> Path:
    bin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, text in scripts.items():
        path = bin_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = bin_dir / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o700)
            tmp.replace(path)  # atomic: a SuperExec starting the program never sees half a file
    return bin_dir


def write_server_bin(bin_dir: Path) -> Path:
    """Write ``bin_dir/flower-superexec`` (:func:`superexec_main`) and ``bin_dir/flwr-serverapp``
    (:func:`serverapp_main`), 0700 each; put ``bin_dir`` first on a SuperLink's ``PATH`` so that its
    ServerApps get their runtime token on standard input. Returns ``bin_dir``."""
    return _write_scripts(bin_dir, {"flower-superexec": SUPEREXEC_SCRIPT.format(python=sys.executable),
                                    "flwr-serverapp": SERVERAPP_SCRIPT.format(python=sys.executable)})


def write_node_bin(bin_dir: Path) -> Path:
    """Write ``bin_dir/flwr-clientapp`` (this guard), ``bin_dir/flower-superexec``
    (:func:`superexec_main`: the runtime token on the ClientApp's stdin) and a refusing program for
    every name in :data:`OTHER_TASK_PROGRAMS` (0700 each); put ``bin_dir`` first on a SuperNode's
    ``PATH``. Returns ``bin_dir``."""
    scripts = {"flwr-clientapp": GUARD_SCRIPT.format(python=sys.executable),
               "flower-superexec": SUPEREXEC_SCRIPT.format(python=sys.executable)}
    scripts.update({p: REFUSE_SCRIPT.format(python=sys.executable, prog=p) for p in OTHER_TASK_PROGRAMS})
    return _write_scripts(bin_dir, scripts)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("write-bin", "write-server-bin"):
        write = write_node_bin if sys.argv[1] == "write-bin" else write_server_bin
        print(write(Path(sys.argv[2]).expanduser().resolve()))
        sys.exit(0)
    sys.exit("usage: python -m labqfl.fl.flower.fabguard write-bin DIR  (then PATH=DIR:$PATH flower-supernode ...)\n"
             "       python -m labqfl.fl.flower.fabguard write-server-bin DIR  (then PATH=DIR:$PATH flower-superlink ...)")
