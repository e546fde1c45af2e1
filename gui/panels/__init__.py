"""The main window's views, one module per panel. Each panel is built from a
:class:`~labqfl.gui.controller.Controller`: it calls the controller's commands and listens to its
signals; no panel touches an instrument."""

from __future__ import annotations

from labqfl.gui.panels.calibration import CalibrationPanel
from labqfl.gui.panels.live import LivePanel, key_provenance_text
from labqfl.gui.panels.log import LogPanel
from labqfl.gui.panels.nodes import NodesPanel
from labqfl.gui.panels.station import StationPanel
from labqfl.gui.panels.training import TrainingPanel

__all__ = ["CalibrationPanel", "LivePanel", "LogPanel", "NodesPanel", "StationPanel", "TrainingPanel",
           "key_provenance_text"]
