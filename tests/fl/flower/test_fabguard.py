"""labqfl's FAB guard (labqfl/fl/flower/fabguard.py; review s34 F4): the checks on a FAB's bytes, the
hooks in flwr's ``run_clientapp``, and the programs a labqfl SuperNode finds on its ``PATH``.
The FAB a SuperNode gets from a ``flwr run`` of labqfl's App project passes; a FAB with another
file, a changed stub module, other components, dependencies or any other change to the pyproject
outside the run config is refused with an error naming what was wrong."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.supernode.runtime import run_clientapp as rc

from labqfl.fl.flower import fabguard
from labqfl.fl.flower.deploy import APP_PYPROJECT, APP_STUB, LocalFederation, write_app_project
from labqfl.fl.flower.fabguard import ForeignFabError, check_fab
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.nodes.warmapp import WarmFederation, start_warm_clientapps


def _project(tmp_path: Path, **spec: object) -> Path:
    return write_app_project(tmp_path / "app", FlowerSpec(**spec), out_json=tmp_path / "out.json")  # type: ignore[arg-type]


def _fab(app: Path) -> bytes:
    """What ``flwr run app`` sends (flwr 1.42 ``flwr.cli.run``: ``build_fab_from_disk``)."""
    return build_fab_from_disk(app)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _members(fab: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(fab)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _manifest(files: dict[str, bytes]) -> bytes:
    return "\n".join(f"{n},{hashlib.sha256(b).hexdigest()},{8 * len(b)}" for n, b in files.items()).encode()


def _refusal(fab: bytes) -> str:
    with pytest.raises(ForeignFabError) as exc:
        check_fab(fab)
    assert "a labqfl SuperNode runs only labqfl's own App" in str(exc.value)
    return str(exc.value)


def test_labqfls_own_fab_passes_with_any_run_config(tmp_path: Path) -> None:
    fab = _fab(_project(tmp_path, clients=3, keys="qkd", rounds=7))
    assert [n for n, _ in _members(fab)] == ["pyproject.toml", "labqfl_flower_app.py", ".info/CONTENT"]
    assert check_fab(fab) == hashlib.sha256(fab).hexdigest()


def test_an_extra_file_is_refused_also_one_that_would_shadow_labqfl(tmp_path: Path) -> None:
    app = _project(tmp_path)
    (app / "evil.py").write_text("import os\n")
    assert "it carries ['evil.py']" in _refusal(_fab(app))
    (app / "evil.py").unlink()
    (app / "labqfl").mkdir()
    (app / "labqfl" / "__init__.py").write_text("# a package named labqfl in the FAB folder\n")
    assert "it carries ['labqfl/__init__.py']" in _refusal(_fab(app))


def test_a_changed_stub_module_is_refused(tmp_path: Path) -> None:
    app = _project(tmp_path)
    (app / "labqfl_flower_app.py").write_bytes(APP_STUB + b"import os\n")
    assert "labqfl_flower_app.py differs from labqfl's stub module" in _refusal(_fab(app))


@pytest.mark.parametrize("component", ["clientapp", "serverapp"])
def test_another_component_is_refused(tmp_path: Path, component: str) -> None:
    app = _project(tmp_path)
    py = app / "pyproject.toml"
    py.write_text(py.read_text().replace(f'{component} = "labqfl.fl.flower.app:', f'{component} = "labqfl_flower_app:'))
    assert "[tool.flwr.app.components] are" in _refusal(_fab(app))


def test_dependencies_are_refused(tmp_path: Path) -> None:
    app = _project(tmp_path)
    py = app / "pyproject.toml"
    py.write_text(py.read_text().replace("dependencies = []", 'dependencies = ["requests>=2"]'))
    msg = _refusal(_fab(app))
    assert "it declares dependencies {'dependencies': ['requests>=2']}" in msg
    py.write_text(py.read_text().replace('dependencies = ["requests>=2"]',
                                         'dependencies = []\noptional-dependencies = {x = ["six"]}'))
    assert "it declares dependencies {'optional-dependencies'" in _refusal(_fab(app))


def test_any_other_pyproject_change_is_refused_and_named(tmp_path: Path) -> None:
    app = _project(tmp_path)
    py = app / "pyproject.toml"
    py.write_text(py.read_text().replace('publisher = "labqfl"', 'publisher = "someone"\nfab-include = ["*.py", "*.toml"]'))
    msg = _refusal(_fab(app))
    assert "differs from labqfl's App in ['tool.flwr.app.fab-include', 'tool.flwr.app.publisher']" in msg


def test_a_member_missing_twice_or_not_in_the_manifest_and_a_non_zip_are_refused(tmp_path: Path) -> None:
    members = dict(_members(_fab(_project(tmp_path))))
    two = {n: members[n] for n in ("pyproject.toml", "labqfl_flower_app.py")}
    assert "it lacks ['.info/CONTENT']" in _refusal(_zip(list(two.items())))
    dup = [*members.items(), ("labqfl_flower_app.py", b"import os\n")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        fab = _zip(dup)
    assert "it holds ['labqfl_flower_app.py'] more than once" in _refusal(fab)
    short = {"pyproject.toml": two["pyproject.toml"]}
    assert "does not list exactly" in _refusal(_zip([*two.items(), (".info/CONTENT", _manifest(short))]))
    wrong = {**two, "labqfl_flower_app.py": b"other"}
    assert "does not list exactly" in _refusal(_zip([*two.items(), (".info/CONTENT", _manifest(wrong))]))
    assert "it is not a zip archive" in _refusal(b"PK\x03\x04 not a zip")


def test_the_hooks_refuse_before_installing_and_load_only_labqfls_clientapp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[bytes] = []
    monkeypatch.setattr(rc, "install_from_fab", lambda fab, install_dir=None, skip_prompt=False: installed.append(fab))
    monkeypatch.setattr(rc, "get_load_client_app_fn", rc.get_load_client_app_fn)  # restored after the test
    monkeypatch.setattr(fabguard, "_CHECKED", [])
    fabguard.install()
    fabguard.install()  # idempotent: one guard, not two
    load = rc.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    from flwr.clientapp.client_app import LoadClientAppError

    with pytest.raises(LoadClientAppError, match="no FAB of run .* was checked"):
        load("someone/innocent-app", "1.0.0", "ab" * 32)
    app = _project(tmp_path)
    (app / "evil.py").write_text("import os\n")
    with pytest.raises(ForeignFabError, match="evil.py"):
        rc.install_from_fab(_fab(app), skip_prompt=True)
    assert installed == []
    (app / "evil.py").unlink()
    good = _fab(app)
    rc.install_from_fab(good, skip_prompt=True)
    assert installed == [good]
    from labqfl.fl.flower.app import client_app

    assert load("someone/innocent-app", "9.9", "cd" * 32) is client_app  # whatever the run states


def test_a_supernode_finds_the_guard_as_flwr_clientapp_and_no_other_task_program(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path, "127.0.0.1:9092")
    path = fed.env(node=True)["PATH"]
    guard = shutil.which("flwr-clientapp", path=path)
    assert guard == str(tmp_path / "node-bin" / "flwr-clientapp")
    assert "from labqfl.fl.flower.fabguard import main" in Path(guard).read_text()
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND

    others = set(TASK_TYPE_TO_COMMAND.values()) - {"flwr-clientapp"}
    assert others <= set(fabguard.OTHER_TASK_PROGRAMS)
    for prog in sorted(others):
        found = shutil.which(prog, path=path)
        assert found == str(tmp_path / "node-bin" / prog)
        run = subprocess.run([found, "--token", "t"], capture_output=True, text=True, timeout=30, check=False)
        assert run.returncode == 1 and f"refusing to start {prog}" in run.stderr
    # the server side (SuperLink and its SuperExec) keeps Flower's own programs
    assert shutil.which("flwr-serverapp", path=fed.env()["PATH"]) != str(tmp_path / "node-bin" / "flwr-serverapp")


def test_the_warm_shims_cold_path_is_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQFL_WARM_CLIENTAPPS", "1")
    monkeypatch.setattr(WarmFederation, "_start", lambda self, name, cmd, env=None: None)  # no zygote
    fed = start_warm_clientapps(tmp_path, "127.0.0.1:9092")
    try:
        assert fed.warm_dir is not None
        shim = fed.warm_dir / "bin" / "flwr-clientapp"
        assert f"REAL = {[str(tmp_path / 'node-bin' / 'flwr-clientapp')]!r}" in shim.read_text()
        path = fed.env(node=True)["PATH"].split(os.pathsep)
        assert path[:2] == [str(fed.warm_dir / "bin"), str(tmp_path / "node-bin")]
    finally:
        shutil.rmtree(fed.warm_dir or tmp_path / "none", ignore_errors=True)


def test_app_pyproject_and_stub_are_what_write_app_project_writes(tmp_path: Path) -> None:
    app = _project(tmp_path)
    assert (app / "labqfl_flower_app.py").read_bytes() == APP_STUB
    assert (app / "pyproject.toml").read_text().startswith(APP_PYPROJECT.split("{config}")[0])
