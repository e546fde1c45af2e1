"""CI at cb09aed: ``test_csprng_training_names_its_bits`` failed with "Internal C++ object (MainWindow) already
deleted", raised in the Qt event loop. An earlier test's window had been deleted, but a lambda it had connected to
its controller's ``connectedChanged`` stayed connected, and the controller's last queued signal reached it during
the next test. Every slot the window puts on the controller's signals is now a bound method, which Qt disconnects
when the window is destroyed."""

from __future__ import annotations

import shiboken6


def test_a_deleted_window_no_longer_hears_its_controller(qtbot, make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    w = make_win(small_config)
    ctl = w.ctl
    shiboken6.delete(w)  # what deleteLater does at the next event-loop turn, done now
    assert not shiboken6.isValid(w)
    # every signal of the controller the window listened to; pytest-qt fails the test on an exception in a slot
    ctl.connectedChanged.emit(False)
    ctl.connectedChanged.emit(True)
    ctl.busyChanged.emit("station", False)
    ctl.progress.emit("distillation", -1.0, "after the window")
    ctl.errorOccurred.emit("Station", "after the window")
    ctl.shutdownFinished.emit()
    qtbot.wait(50)
