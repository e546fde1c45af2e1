"""The GUI core's tasks, one module each: the station (connect, settings, safe state), acquisition
with live distillation, calibration and training. :class:`labqfl.gui.core.TestbedCore` holds the
event queue and the threads and delegates each command to its task; no Qt here."""
