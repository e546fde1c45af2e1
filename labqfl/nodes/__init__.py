"""The network of nodes: every party of the QKD network in its own OS process, with its own data
folder, certificate and secrets, talking only over authenticated network sessions
(:mod:`labqfl.net`). docs/nodes.md; docs/decisions/0004-optical-layer-process.md.

* :mod:`labqfl.nodes.client` — ``labqfl node client``: a client Ci (randomness, choice log, key
  store; both ends of its pairs' post-processing as Ci or Cj);
* :mod:`labqfl.nodes.detector` — ``labqfl node detector``: the untrusted measurement node;
* :mod:`labqfl.nodes.optics` — ``labqfl node optics``: the simulated optical layer;
* :mod:`labqfl.nodes.launch` — a whole network on loopback (``labqfl node up``) and the
  operator's acquisition (``labqfl node acquire``).
* :mod:`labqfl.nodes.flserver` — ``labqfl node server``: the federated-learning server (Flower's
  SuperLink behind a mutual-TLS front, :mod:`labqfl.nodes.tunnel`);
* :mod:`labqfl.nodes.supernode` — ``labqfl node supernode``: a client's Flower SuperNode, beside
  its client node on the same data folder;
* :mod:`labqfl.nodes.fl` — the server node and the SuperNodes on loopback, and the operator's
  ``ctl/train``; :mod:`labqfl.nodes.runjob` — ``labqfl run --nodes``.
"""
