"""A labqfl SuperNode runs only labqfl's own Flower App (review s34 F4; labqfl/fl/flower/fabguard.py).

The server's SuperLink ships the FAB. Here it ships a foreign ClientApp that, once imported,
marks a file and, once run, reads 64 key bits from C1's key store and returns them. Before the
guard, the server got the bits back (over the warm zygote as well). Now the ClientApp
process refuses the FAB before installing or importing any of it: the server gets an error reply,
the node's log names what was wrong, the FAB's module never ran and C1's key store is untouched.
Each case is one TLS-less loopback federation on 127.0.0.1, with the SuperNode started as
``labqfl node supernode`` starts it.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from labqfl.fl.flower.deploy import APP_PYPROJECT, local_federation
from labqfl.keystore import KeyStore
from labqfl.nodes.warmapp import WarmFederation, start_warm_clientapps

#: the foreign App: importing it in a ClientApp process writes ``marker``; its ClientApp reads C1's pad bits; its ServerApp
#: writes what came back to the run config's ``out``
EVIL = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    if sys.argv[0].endswith("flwr-clientapp"):  # on the SuperNode (the ServerApp imports this module too)
        Path({marker!r}).write_text("imported in pid %d" % os.getpid())
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    client_app = ClientApp()
    server_app = ServerApp()

    @client_app.query()
    def steal(msg: Message, context: Context) -> Message:
        from labqfl.keystore import KeyStore
        with KeyStore.for_node("C1", Path(str(context.node_config["labqfl-keystore"]))) as st:
            st.reserve("C1-C2", 64, "fl", "evil", info={{"use": "evil"}})
            bits = "".join(str(int(b)) for b in st.read_reserved("evil").bits)
        return Message(RecordDict({{"loot": ConfigRecord({{"bits": bits}})}}), reply_to=msg)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        import time
        t0 = time.time()
        while not list(grid.get_node_ids()) and time.time() - t0 < 60:
            time.sleep(0.2)
        msgs = [Message(RecordDict({{"x": ConfigRecord({{"a": 1}})}}), dst_node_id=n, message_type="query")
                for n in grid.get_node_ids()]
        res = [("error: " + r.error.reason) if r.has_error() else str(r.content.config_records["loot"]["bits"])
               for r in grid.send_and_receive(msgs, timeout=60)]
        Path(str(context.run_config["out"])).write_text(json.dumps(res))
''')


def _store(root: Path) -> tuple[Path, np.ndarray]:
    data = root / "c1data"
    data.mkdir(parents=True)
    bits = np.random.default_rng(5).integers(0, 2, 4096, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as st:
        st.add_block("C1-C2", bits, block_id=str(uuid.uuid4()), purpose="fl")
    return data, bits


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _foreign_app(root: Path, marker: Path, out: Path, *, only_labqfls_names: bool) -> Path:
    """The foreign App: ``evil.py`` beside the pyproject, or (``only_labqfls_names``) its code in
    a module named as labqfl's stub, so that the FAB holds exactly labqfl's file names."""
    app = root / "app"
    app.mkdir()
    module = "labqfl_flower_app" if only_labqfls_names else "evil"
    (app / f"{module}.py").write_text(EVIL.format(marker=str(marker)))
    pyproject = APP_PYPROJECT.replace("labqfl.fl.flower.app:", f"{module}:").format(config=f'out = "{out}"')
    (app / "pyproject.toml").write_text(pyproject)
    return app


def _run_foreign(tmp_path: Path, *, zygote: bool, only_labqfls_names: bool) -> tuple[list[str], str]:
    data, bits = _store(tmp_path)
    before = _digest(data)
    marker, out = tmp_path / "imported.txt", tmp_path / "loot.json"
    app = _foreign_app(tmp_path, marker, out, only_labqfls_names=only_labqfls_names)
    with local_federation(tmp_path / "fed") as fed:
        # labqfl.nodes.supernode's way: the client's own federation, with a warm-ClientApp zygote
        # unless LABQFL_WARM_CLIENTAPPS=0
        (tmp_path / "c1fed").mkdir()
        cfed = start_warm_clientapps(tmp_path / "c1fed", fed.fleet, tls=fed.tls)
        try:
            assert isinstance(cfed, WarmFederation) and (cfed.warm_dir is not None) == zygote
            if zygote:
                assert cfed.wait_zygote()
            cfed.start_supernode("C1", {"labqfl-client": "C1", "labqfl-keystore": str(data)})
            run = fed.run_app(app, timeout_s=120)
        finally:
            cfed.stop()
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    log = (cfed.workdir / "supernode-C1.log").read_text(errors="replace")
    replies = json.loads(out.read_text())
    assert not marker.exists(), "the foreign App's module was imported on the SuperNode"
    assert _digest(data) == before, "C1's key store changed"
    with KeyStore.for_node("C1", data, create=False) as st:
        assert st.available_bits("C1-C2") == len(bits)
    stolen = "".join(map(str, bits[:64]))
    assert all(stolen not in r for r in replies)
    if zygote:  # the ClientApp process was a zygote child (SuperNode, SuperExec and >= 1 ClientApp forked)
        zlog = (cfed.workdir / "warm-clientapps.log").read_text(errors="replace")
        assert "zygote stops after" in zlog and int(zlog.split("zygote stops after")[1].split()[0]) >= 3
    return replies, log


def test_a_foreign_fab_is_refused_by_the_warm_zygotes_clientapp_and_reads_nothing(tmp_path: Path) -> None:
    replies, log = _run_foreign(tmp_path, zygote=True, only_labqfls_names=False)
    assert len(replies) == 1 and replies[0].startswith("error: ")
    assert "ForeignFabError" in replies[0] and "it carries ['evil.py']" in replies[0]
    refused = [line for line in log.splitlines() if "labqfl FAB guard: refusing" in line]
    assert len(refused) == 1 and "evil.py" in refused[0]


def test_a_foreign_fab_with_labqfls_file_names_is_refused_without_warm_clientapps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # LABQFL_WARM_CLIENTAPPS=0: no zygote; the SuperExec starts flwr-clientapp from the node's PATH
    monkeypatch.setenv("LABQFL_WARM_CLIENTAPPS", "0")
    replies, log = _run_foreign(tmp_path, zygote=False, only_labqfls_names=True)
    assert len(replies) == 1 and replies[0].startswith("error: ")
    assert "labqfl_flower_app.py differs from labqfl's stub module" in replies[0]
    refused = [line for line in log.splitlines() if "labqfl FAB guard: refusing" in line]
    assert len(refused) == 1 and "stub module" in refused[0]
