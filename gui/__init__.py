"""The labqfl GUI (PySide6 + pyqtgraph): operate the Sagnac testbed from a window.

* :mod:`labqfl.gui.core` — :class:`TestbedCore`, the logic without Qt (station, worker threads,
  event queue);
* :mod:`labqfl.gui.controller` — :class:`Controller`, the Qt adapter (commands in, signals out,
  at most 10 updates per second);
* :mod:`labqfl.gui.main_window` — :class:`MainWindow`, built from a controller;
* :mod:`labqfl.gui.app` — :func:`run_gui` and :func:`screenshot` (``labqfl gui``).

See docs/gui.md.
"""
