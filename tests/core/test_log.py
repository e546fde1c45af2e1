"""Logging: instrument name on each line; raw bytes never reach a handler."""

from __future__ import annotations

import io
import logging

from labqfl.log import instrument_logger, set_verbosity


def test_instrument_logger_prefixes_name_and_one_switch_controls_level():
    buf = io.StringIO()
    set_verbosity("INFO", stream=buf)
    try:
        instrument_logger("D0").info("bias set to %s uA", 10)
        logging.getLogger("labqfl.qkd").debug("hidden at INFO")
        out = buf.getvalue()
        assert "[D0] bias set to 10 uA" in out and "labqfl.instr.D0" in out
        assert "hidden at INFO" not in out
    finally:
        set_verbosity("WARNING")


def test_bytes_arguments_are_filtered():
    buf = io.StringIO()
    set_verbosity("DEBUG", stream=buf)
    try:
        logging.getLogger("labqfl.keystore").debug("key %s", b"\xde\xad\xbe\xef")
        logging.getLogger("labqfl.keystore").debug("took %d bits", 128)
        out = buf.getvalue()
        assert "took 128 bits" in out and "xde" not in out
    finally:
        set_verbosity("WARNING")


def test_default_console_level_prints_the_clis_own_line_format():
    """Docs review s34 L15: without -v a warning reached the terminal as a timestamped record
    ("2026-12-06 23:39:23,737 WARNING labqfl.station: …") beside the CLI's own "error: …" line."""
    buf = io.StringIO()
    set_verbosity("WARNING", stream=buf)
    try:
        logging.getLogger("labqfl.station").warning("putting %s in its safe state", "D0")
        logging.getLogger("labqfl.station").info("hidden at WARNING")
        assert buf.getvalue() == "warning: putting D0 in its safe state\n"
    finally:
        set_verbosity("WARNING")
    buf = io.StringIO()
    set_verbosity("INFO", stream=buf)  # -v (and the node processes' own log files): timestamped records
    try:
        logging.getLogger("labqfl.station").warning("w")
        assert "WARNING labqfl.station: w" in buf.getvalue()
    finally:
        set_verbosity("WARNING")
