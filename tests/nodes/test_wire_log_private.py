"""The wire-log test hook writes owner-only files (review s35 leak F6).

``LABQFL_NODE_WIRE_LOG=DIR`` appends every message a node's sessions carry to ``DIR/<node>.wire``, the optics
link's ``mod/applied`` codes included (a client's choices at every clicked slot: its raw key). The files were
created with the process umask (``-rw-r--r--``): an environment variable left set on a client host published
that client's choices to every local user.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labqfl.nodes.common import WIRE_LOG_ENV, NodeError, RecordedChannel, read_wire
from labqfl.qkd.messaging import Channel, Message


class _Echo(Channel):
    def _exchange(self, msg: Message) -> Message:
        return Message("echo/ok", {"n": int(msg.get("n"))})


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: files 0644, folders 0755 unless asked otherwise
    try:
        yield
    finally:
        os.umask(old)


def test_wire_log_files_are_0600_in_a_0700_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  umask_022: None, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "wire" / "run1"  # missing: made by the hook
    monkeypatch.setenv(WIRE_LOG_ENV, str(folder))
    ch = RecordedChannel(_Echo(), "C1")
    with caplog.at_level(logging.WARNING, logger="labqfl.nodes.common"):
        for n in range(3):
            ch.request(Message("echo/req", {"n": n}))
    f = folder / "C1.wire"
    assert f.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert [m.kind for m in read_wire(f)] == ["echo/req", "echo/ok"] * 3
    assert sum(WIRE_LOG_ENV in r.getMessage() for r in caplog.records) <= 1  # said once per folder, not per message


def test_an_existing_wire_log_is_tightened_and_a_link_in_its_place_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "wire"
    folder.mkdir()
    monkeypatch.setenv(WIRE_LOG_ENV, str(folder))
    old = folder / "C1.wire"
    old.write_bytes(b"")
    old.chmod(0o644)
    RecordedChannel(_Echo(), "C1").request(Message("echo/req", {"n": 1}))
    assert old.stat().st_mode & 0o777 == 0o600
    target = tmp_path / "elsewhere.txt"
    (folder / "C2.wire").symlink_to(target)
    with pytest.raises(NodeError, match="wire log .*C2.wire"):
        RecordedChannel(_Echo(), "C2").request(Message("echo/req", {"n": 1}))
    assert not target.exists()
