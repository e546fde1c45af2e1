"""The contracts every side of the data path agrees on, below all of them (docs/decisions/0005).

* :mod:`labqfl.contracts.types` — outcome codes, announcements, modulation logs, pair counts,
  acquisition IDs and engine names: what the Station, the simulator, the nodes and the
  post-processing exchange;
* :mod:`labqfl.contracts.channel_model` — the analytical model of the loop, used by the
  simulator (which must reproduce it) and by the key-rate model (which predicts from it);
* :mod:`labqfl.contracts.schedule` — the time-division of the loop between pairs.

They import nothing above the configuration and the instrument base, so the simulator
(``labqfl.sim_backends``) and the post-processing (``labqfl.qkd``) both depend on them and never
on each other.
"""
