"""The network of nodes: every party of the QKD network in its own OS process, with its own data
folder, certificate and secrets, talking only over authenticated network sessions
(:mod:`labqfl.net`). docs/nodes.md; docs/decisions/0004-optical-layer-process.md.

* :mod:`labqfl.nodes.client` — ``labqfl node client``: a client Ci (randomness, choice log, key
  store; both ends of its pairs' post-processing as Ci or Cj);
* :mod:`labqfl.nodes.detector` — ``labqfl node detector``: the untrusted measurement node;
* :mod:`labqfl.nodes.optics` — ``labqfl node optics``: the simulated optical layer;
* :mod:`labqfl.nodes.launch` — a whole network on loopback (``labqfl node up``) and the
  operator's acquisition (``labqfl node acquire``).
"""
