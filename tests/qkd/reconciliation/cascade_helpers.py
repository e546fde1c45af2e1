"""Shared helpers of the Cascade tests (importable by name: this folder's conftest puts it on sys.path)."""

from __future__ import annotations

from labqfl.qkd.cascade import CascadeAlice
from labqfl.qkd.messaging import LocalChannel, Message


class RecordingChannel(LocalChannel):
    """A local channel that keeps every request and reply."""

    def __init__(self, responder: CascadeAlice) -> None:
        super().__init__(responder)
        self.log: list[tuple[Message, Message]] = []

    def _exchange(self, msg: Message) -> Message:
        reply = super()._exchange(msg)
        self.log.append((msg, reply))
        return reply
