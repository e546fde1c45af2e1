"""labqfl on Flower: QKD-masked federated learning across processes and machines.

The protocol is :mod:`labqfl.fl` (quantise → mask → sum mod 2^q → unmask); this package only
moves its arrays with Flower's Message API (``flwr`` ≥ 1.42):

- :mod:`labqfl.fl.flower.client` — ClientApp; :func:`~labqfl.fl.flower.client.labqfl_secagg_mod`
  is the client-side masking mod (keys from the node's own key store or X25519 + AES-CTR);
- :mod:`labqfl.fl.flower.server` — :class:`~labqfl.fl.flower.server.LabqflServer`, the ServerApp
  logic (stages keys → refs (qkd: the masters' Wegman–Carter tags over their refs and the slaves'
  nonces) → mask → reveal → end, dropout recovery, evaluation);
- :mod:`labqfl.fl.flower.identity` — replies signed with the client node's certificate key and
  checked by the server against the network CA and the claimed client name;
- :mod:`labqfl.fl.flower.engine` — :func:`~labqfl.fl.flower.engine.run_simulation` (Ray backend);
- :mod:`labqfl.fl.flower.app` — module-level ``server_app`` / ``client_app`` for a deployment
  (SuperLink + SuperNodes), :mod:`labqfl.fl.flower.deploy` — start them on one machine.

See ``docs/flower.md``. Importing this package imports ``flwr`` (install ``labqfl[flower]``).
"""

from labqfl.fl.flower.spec import FlowerSpec

__all__ = ["FlowerSpec"]
