"""Client Cj's end of one pair served by a NodeServer in its own process (for the kill test in
test_twoparty.py). Usage: ``python cj_node_process.py SETUP.pkl CERTS_DIR OUT_FILE``.

``SETUP.pkl`` (written by the test): pair, Cj's modulation log, both client setups, protocol
settings, Cj's copy of the pre-shared authentication bits, squashing seed. Routes: ``qkd/pair``
(the pair protocol, :class:`~labqfl.qkd.twoparty.PairEndJ`) and ``test/announce`` (the detector's
announcements delivered to Cj, unauthenticated like the detector's own channel). Prints the
server address on one line, then serves until killed or until stdin closes. Each accepted block
appends ``block_id sha256(key)`` to OUT_FILE (a digest, never the key).
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

from labqfl.contracts.types import Announcements
from labqfl.net import NodeCredentials, NodeServer, ServedSession
from labqfl.qkd.authentication import BitPool
from labqfl.qkd.messaging import Message
from labqfl.qkd.twoparty import BlockOutcome, PairEndJ


class _Announcer:
    def __init__(self, end: PairEndJ) -> None:
        self.end = end

    def handle(self, req: Message) -> Message:
        ann = Announcements(self.end.pair, np.asarray(req.get("slots"), np.int64),
                            np.asarray(req.get("outcomes"), np.uint8))
        self.end.receive(ann, int(req.get("lo")), int(req.get("hi")), int(req.get("n_slots")))
        return Message("ann/received", {})


def main(setup_path: str, certs: str, out_file: str) -> None:
    with open(setup_path, "rb") as f:
        s = pickle.load(f)  # written by the test itself
    end = PairEndJ(s["pair"], s["log_j"], s["setup_i"], s["setup_j"], s["settings"], BitPool(s["auth_bits"]),
                   np.random.default_rng(s["seed"]), schedule=s["schedule"])
    out = Path(out_file)

    def stored(o: BlockOutcome) -> None:
        if o.accepted and o.final is not None:
            with out.open("a") as fh:
                fh.write(f"{o.block_id} {hashlib.sha256(o.final.tobytes()).hexdigest()}\n")

    end.on_outcome = stored
    srv = NodeServer(NodeCredentials.load(Path(certs), "C2")).start()
    srv.route("qkd/pair", lambda peer, hello: ServedSession(end, end.tx, on_close=end.on_session_end),
              allowed_peers={"C1"})
    srv.route("test/announce", lambda peer, hello: ServedSession(_Announcer(end)), allowed_peers={"C1"})
    print(srv.address, flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
    srv.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
