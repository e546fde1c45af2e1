"""Review s39 lab LAB3: the end-check refusal over nodes names the key blocks each client stored
(``labqfl.nodes.launch.stored_from_refused``). It asked the clients one after another, each over a session whose
timeout is 2 x timeout + 60 s: a hung client (stopped, deadlocked; not killed) held the refusal up to 31 min, client
after client. Now the clients are asked at the same time and each question is waited for at most
``STORED_ANSWER_S``; a late client is named "not known (no answer within … s)" and its session aborted.

In process, no node: sessions are fakes answering as a client's ``ctl`` does. A hung one answers nothing until it
is aborted (or, as a bound on the test before the fix, after ``HANG_S``)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from labqfl.nodes import launch
from labqfl.qkd.messaging import Message

HANG_S = 5.0


class _Client:
    def __init__(self, stored: list[str] | None) -> None:
        self.stored = stored  # None: hung
        self.asked: list[Message] = []
        self.aborted = threading.Event()

    def request(self, msg: Message) -> Message:
        self.asked.append(msg)
        if self.stored is None:
            if self.aborted.wait(HANG_S):
                raise OSError("session aborted")
            raise OSError("hung client's session timed out")
        return Message("ctl/results", {"results": "{}", "stored_blocks": json.dumps(
            {"A-B": {"stored": self.stored, "pending": []}})})

    def abort(self) -> None:
        self.aborted.set()


def test_hung_clients_are_named_not_known_after_a_bounded_wait_and_the_others_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "STORED_ANSWER_S", 0.5, raising=False)  # absent before the fix
    ctl = {"A": _Client(None), "B": _Client(["blk-1", "blk-2"]), "C": _Client(None)}
    t0 = time.monotonic()
    text = launch.stored_from_refused(ctl, "nodes/acq-1", 1.0, 900.0)
    wall = time.monotonic() - t0
    # two questions, the clients at once: at most 2 x 0.5 s (before: HANG_S per hung client, one after another)
    assert wall < 2.0, (wall, text)
    assert "client A: not known (no answer within 0.5 s)" in text, text
    assert "client C: not known (no answer within 0.5 s)" in text, text
    assert "client B: pair A-B: blk-1, blk-2" in text, text
    assert ctl["A"].aborted.is_set() and ctl["C"].aborted.is_set() and not ctl["B"].aborted.is_set()
    assert [m.fields.get("stored_blocks") for m in ctl["B"].asked] == [None, 1]  # waited for, then asked
    assert len(ctl["A"].asked) == 1  # a client late for the wait is not asked again on its aborted session


def test_a_client_that_fails_at_once_is_named_with_why() -> None:
    class _Gone(_Client):
        def request(self, msg: Message) -> Message:
            raise OSError("connection refused")

    text = launch.stored_from_refused({"A": _Gone([]), "B": _Client([])}, "nodes/acq-2", 1.0, 900.0)
    assert "client A: not known (OSError: connection refused)" in text, text
    assert "client B: pair A-B: none" in text, text
