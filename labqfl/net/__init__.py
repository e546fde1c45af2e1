"""The network of nodes: node identities (mutual TLS) and the session transport between nodes.

See ARCHITECTURE.md ("Nodes") and docs/decisions/0001-node-transport.md.
"""

from labqfl.net.pki import NodeCredentials, make_node_certs
from labqfl.net.transport import NodeChannel, NodeServer, ServedSession

__all__ = ["NodeChannel", "NodeCredentials", "NodeServer", "ServedSession", "make_node_certs"]
