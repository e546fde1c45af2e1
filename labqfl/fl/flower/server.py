"""Flower ServerApp logic: drive the labqfl secure-aggregation stages over a Flower ``Grid``.

Per round r (see :mod:`labqfl.fl.flower.client` for the client side):

1. ``keys`` — every participant answers refs for the pairs it masters, with a separate 256-bit
   refs tag key per pair, and a fresh 128-bit nonce per pair it is the slave of (qkd), or an
   X25519 public key (csprng; in a deployment with its node certificate key's signature over the
   key, run and round, and its certificate, which the server relays with the key to every partner
   and each partner requires: docs/secure_aggregation.md §9). A client that does not answer is dropped *before masking* (the
   pairs with it are left out of the round; key bits its partners reserved for them go back).
2. ``refs`` (qkd only) — each master is sent the nonces of its participating slaves and answers
   per pair a Wegman–Carter tag of its refs and that nonce (:func:`~labqfl.fl.flower.keys.refs_statement`);
   a master that fails it is dropped before masking like a keys-stage failure (participants and
   pairs planned again). The tags travel to the slaves with the mask message; each slave checks
   its pair's tag before it uses any ref (the server can neither forge, alter nor replay refs).
   In a deployment the master also answers its certificate key's signature over the same statement
   (``refsig.<pair>``) and its certificate (``refcert``); the server relays both to the slave, which
   requires them (docs/secure_aggregation.md §9: the tag alone is forgeable once tag-key bits were
   revealed after a dropout lie).
3. ``mask`` — the server sends the global parameters, each client's integer range M_i (from the
   public sample counts, :func:`~labqfl.fl.quantize.weight_ranges`), its position in the loop order
   and the refs / public keys of its partners; each client answers ``y_i = v_i + m_i mod 2^q``.
4. ``reveal`` — only if clients were lost after masking: their surviving partners reveal the
   shared keys, after the same safety checks as :func:`~labqfl.fl.secure.secure_round`
   (≥ ``min_survivors`` survivors, survivors still connected in the mask graph).
5. sum mod 2^q (:func:`~labqfl.fl.masks.aggregate`), dequantise, FedAvg step, evaluation on the
   server's test set; ``end`` makes the clients consume their round's key reservations.

If the round is given up after the keys stage (too few clients, a split mask graph, a failed
reveal), the server sends ``abort`` with ``mask_sent``: the clients consume their reservations,
or release them when no mask message (hence no refs) ever left the server — except a master's
reservations whose refs it has tagged, which it always consumes (the server holds refs the slave
would accept).

With self-masks (``spec.self_masks``, :mod:`labqfl.fl.selfmask`) the mask stage also carries the
round's participants and the Shamir threshold t; each reply adds the node's self-mask shares for
its partners under one-time pads; stage 4 becomes ``unmask`` and always runs: after the same checks
plus "every survivor keeps ≥ t surviving share holders", each survivor is asked for the keys of its
dropped partners and its shares (relayed ciphertexts) of surviving clients' self-masks — never
both kinds about one peer, which each client enforces itself — and the server subtracts the
reconstructed self-masks. A dropped client's self-mask is never asked for. In a deployment (client
identities or an operator-signed spec) a ``consistency`` stage runs between mask and unmask (Bonawitz,
Ivanov, Kreuter et al., CCS 2017, round 3 *ConsistencyCheck*; :meth:`LabqflServer._consistency`): every
survivor signs the round's survivor and dropped sets, recording them for (job, round) in its own data
folder, and each unmask message relays every signature; a node unmasks only the set it signed itself
and that ``max(t, min_survivors, N/2 + 1)`` survivors signed, so different stories to different clients
are refused. A survivor that does not sign, or fewer survivors than that, abort the round before unmask.

With distributed DP (``spec.dp_epsilon`` > 0) the server plans the mechanism once
(:meth:`~labqfl.fl.flower.spec.FlowerSpec.dp_plan`, the in-process engine's
:func:`~labqfl.fl.dp.plan_dp`), sends the plan with the mask stage, runs every stage on the
plan's d' words with equal weights, decodes the sum with :func:`~labqfl.fl.dp.dp_decode` (mean
over the survivors) and, after each round r, records ε(δ) of rounds 1..r from ``dp_accounting``
(:func:`~labqfl.fl.dp.accounted_epsilon`) in the round's metrics; the run's ``privacy`` block
is the plan's.

The server sees sample counts, masked vectors, refs (names of key bits, not bits), nonces and refs
tags (one-time-padded: nothing about the tag key) or public keys,
and — after a dropout only — keys of pairs whose other end dropped. With each masked upload the
client also sends its training loss and clipped-value count in clear; under DP the server does not
use them (the accountant does not cover them: the round's train loss is NaN, its clipped count 0).

A malformed mask reply (an upload of the wrong length or dtype, a missing self-mask share; never its
clear metrics, second review s34 F1) makes that client lost after masking, exactly like a client whose reply
never came: the reason is logged and kept in :attr:`FlowerRound.dropped_reasons`, the reply is
dropped, and the round completes for the others if enough survive (review s34 F6).

Client identity (a deployment: ``identity`` = a :class:`~labqfl.fl.flower.identity.ReplyVerifier`
of the network's CA): every message carries the run ID and a fresh nonce, and every reply must be
signed by the certificate key of the client it claims to be; a reply that is not is logged with its
reason and counts as that client's loss (setup: the node is never asked again; keys/mask: a
dropout, recovered as above; reveal/unmask: the round fails).

Operator-signed spec (a deployment: ``signed_spec``, :mod:`labqfl.fl.flower.specsig`): every message
also carries the run's settings as the operator signed them (``signed_spec``); the server refuses to
start with a spec that departs from them, and each node with the network CA refuses any message that
carries none or departs from it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from labqfl.errors import SecureAggregationError
from labqfl.fl.dp import accounted_epsilon, dp_decode
from labqfl.fl.flower.client import CFG, PINNED, uint_array
from labqfl.fl.flower.identity import NONCE, ReplyRefused, ReplyVerifier
from labqfl.fl.flower.keys import REFS_TAG_BITS
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import SIGNED_SPEC, SignedSpec, spec_departures
from labqfl.fl.masks import aggregate, components, dangling_pairs, split_pair
from labqfl.fl.quantize import dequantize_sum, weight_ranges
from labqfl.fl.selfmask import (
    CONSISTENCY_NEED_RULE,
    check_threshold,
    choose_share_holders,
    default_threshold,
    holders_of,
    shamir_reconstruct,
    share_bits,
    share_dtype,
)
from labqfl.log import get_logger

log = get_logger(__name__)


@dataclass
class FlowerRound:
    """Server-side record of one round (no key material, no unmasked data)."""

    round: int
    participants: list[str]
    dropped_before_masking: list[str]
    dropped_after_masking: list[str]
    pairs: int
    key_bits_per_pair: int
    reveal_bits: int
    upload_bytes_per_client: float
    download_bytes_per_client: float
    stage_seconds: dict[str, float]
    clipped_values: int
    train_loss: float
    aggregate: np.ndarray = field(repr=False)
    self_masks: bool = False
    threshold: int = 0
    share_reveal_bits: int = 0
    #: with DP: ε at the plan's δ spent by rounds 1..this one (``dp_accounting``, as in process)
    privacy_epsilon_spent: float | None = None
    #: qkd: key bits per pair of the refs tag (:data:`~labqfl.fl.flower.keys.REFS_TAG_BITS`),
    #: included in ``key_bits_per_pair``; 0 with csprng keys
    tag_bits_per_pair: int = 0
    #: why each dropped client (before or after masking) was lost: no reply, an error, a refused
    #: signature, a malformed masked upload, ...
    dropped_reasons: dict[str, str] = field(default_factory=dict)


def send_and_receive(grid: Any, messages: list[Message], timeout: float, straggler_s: float = 0.0,
                     poll_s: float = 0.1, ended: list[str] | None = None) -> list[Message]:
    """Push ``messages``, collect replies until all have answered, ``timeout`` seconds have passed
    or — with ``straggler_s`` > 0 — ``straggler_s`` seconds have passed since the latest reply
    (the clients still missing then are treated as lost). Polls every ``poll_s`` seconds. A grid
    without ``push_messages``/``pull_messages`` falls back to its ``send_and_receive``. ``ended``, if
    given, gets ``"straggler"`` appended when the straggler timeout ended the wait (review s38 G3: the
    reason recorded for the clients cut off must say so, not name the stage timeout).

    A reply whose message reached the SuperLink but whose objects did not (its sender died uploading)
    holds one ``grid.pull_messages`` call until the SuperLink's object-push session expires (flwr
    ``OBJECT_PUSH_SESSION_TTL_SECONDS``, 180 s): neither limit is checked meanwhile (review s38 G6)."""
    if not (hasattr(grid, "push_messages") and hasattr(grid, "pull_messages")):
        return list(grid.send_and_receive(messages, timeout=timeout))
    ids = set(grid.push_messages(messages))
    t0 = last = time.monotonic()
    got_any = False
    out: list[Message] = []
    while ids:
        reps = list(grid.pull_messages(ids))
        now = time.monotonic()
        if reps:
            out.extend(reps)
            ids.difference_update(m.metadata.reply_to_message_id for m in reps)
            last, got_any = now, True
        if not ids or now - t0 >= timeout:
            break
        if straggler_s > 0 and got_any and now - last >= straggler_s:
            if ended is not None:
                ended.append("straggler")
            break
        time.sleep(poll_s)
    return out


def _stage_of(msgs: dict[str, Message]) -> str:
    """The protocol stage ``msgs`` (one stage's messages) carry, "?" if none says."""
    for m in msgs.values():
        return str(m.content.config_records[CFG].get("stage", "?"))
    return "?"


def message_bytes(msg: Message) -> int:
    """Size of a message's content as Flower serialises it (protobuf ``RecordDict``), in bytes."""
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(msg.content).ByteSize())


#: longest wait [s] for the replies to the end message a run sends when it stops between two rounds
BEST_EFFORT_END_S = 30.0
#: the reason recorded for a client of the spec's ``absent`` (lost before this Flower run started)
LOST_BEFORE_RUN = "lost before this Flower run started (its node had gone in an earlier run of the job)"
#: the reason recorded for a client that had not answered ``missing_ok_after_s`` into the run's start
MISSING_AT_START = "its node did not answer at this Flower run's start (missing_ok_after_s)"


def round_shortfall(spec: FlowerSpec, part: list[str], *, deployed: bool = True) -> str | None:
    """Why a round whose participants (the clients that answered its keys stage) are ``part`` cannot
    complete even if none of them is lost later, or ``None``: fewer than the secure-aggregation settings'
    survivors (``min_survivors``, a DP plan's clients), a mask graph the missing clients split, and — with
    self-masks in a deployment — fewer than the survivors that must sign the round's survivor set
    (:meth:`~labqfl.fl.flower.spec.FlowerSpec.consistency_need` at the round's threshold). Such a round is
    refused before masking (:meth:`LabqflServer._plan_round`): after the mask stage it would be aborted at the
    consistency stage with every pad of the round spent; ``labqfl run`` over nodes asks it before a segment
    whose clients include some lost ones (the spec's ``absent``)."""
    cfg = spec.secagg()
    if (short := cfg.too_few_survivors(len(part))) is not None:
        return f"{len(part)} client(s) {part} can take part, {short}"
    pairs = [p for p in cfg.pairs(spec.names) if all(x in part for x in split_pair(p))]
    if len(components(part, pairs)) > 1:
        return f"the clients missing ({[c for c in spec.names if c not in part]}) split the mask graph"
    if not (cfg.self_masks and deployed):
        return None
    t = cfg.threshold if cfg.threshold is not None else default_threshold(part, pairs)
    need = spec.consistency_need(t)
    if len(part) < need:
        return (f"{len(part)} client(s) {part} can take part; a deployed self-mask round needs {need} = "
                f"{CONSISTENCY_NEED_RULE} survivors to sign its survivor set (c = {spec.tolerated_colluders()} "
                "colluding clients tolerated, signed 'colluders')")
    return None


class LabqflServer:
    """Runs a :class:`FlowerSpec` on a ``Grid``; ``on_round(FlowerRound, params)`` after each round."""

    def __init__(self, spec: FlowerSpec, on_round: Callable[[FlowerRound, np.ndarray], None] | None = None,
                 progress: Callable[[Any], None] | None = None, identity: ReplyVerifier | None = None,
                 signed_spec: SignedSpec | None = None) -> None:
        self.spec = spec
        #: the operator-signed spec sent with every message (deployed nodes require it,
        #: :mod:`labqfl.fl.flower.specsig`); its settings must be ``spec``'s
        self.signed_spec = signed_spec
        if signed_spec is not None and (bad := spec_departures(signed_spec, spec)):
            raise SecureAggregationError(f"the run's spec departs from the operator-signed spec {signed_spec.spec_id} "
                                         f"(field: run, signed): {bad}; the nodes would refuse every message")
        #: with a verifier, every reply must be signed by the claimed client's certificate key
        #: (:mod:`labqfl.fl.flower.identity`); a reply that is not is refused (that client is lost)
        self.identity = identity
        self.progress = progress
        self.cfg = spec.secagg()
        self.dp = self.cfg.dp  # DPPlan or None (the same plan_dp call as the in-process engine)
        self.on_round = on_round
        self.run_tag = secrets.token_hex(8)
        self.rounds: list[FlowerRound] = []
        #: (round, n_words, survivors) of a completed round whose reservations the next round's
        #: ``keys`` message finishes (no separate ``end`` between the rounds of a run)
        self._unfinished: tuple[int, int, list[str]] | None = None
        #: clients that had not answered ``missing_ok_after_s`` into :meth:`connect`: dropped before masking
        self.missing_at_start: list[str] = []

    # ---------------------------------------------------------------------------- messaging
    def _base(self, stage: str, r: int, n: int) -> dict[str, Any]:
        d = self.spec.to_config()
        d.update(stage=stage, round=r, n_params=n, run_tag=self.run_tag, **self._signed())
        return d

    def _deployed(self) -> bool:
        """A deployment (replies checked or the operator's spec sent): self-mask rounds have a consistency stage."""
        return self.identity is not None or self.signed_spec is not None

    def _signed(self) -> dict[str, Any]:
        return {SIGNED_SPEC: self.signed_spec.to_json()} if self.signed_spec is not None else {}

    def _refusal(self, rep: Message, name: str, sent: Message) -> str:
        """Why ``rep`` is not client ``name``'s signed answer to ``sent`` ("" when it is, or when
        this server checks no identities). Run ID, nonce, stage and round are the server's own."""
        if self.identity is None:
            return ""
        cfg = sent.content.config_records[CFG]
        try:
            self.identity.verify(rep, run=self.run_tag, nonce=str(cfg[NONCE]), stage=str(cfg["stage"]),
                                 round_index=int(cfg["round"]), name=name)  # type: ignore[arg-type]
        except ReplyRefused as exc:
            return str(exc)
        return ""

    def _exchange(self, grid: Any, msgs: dict[str, Message], timeout: float,
                  counters: dict[str, list[int]] | None = None,
                  straggler: bool = True) -> tuple[dict[str, Message], dict[str, str]]:
        """Send one message per client, collect replies. Returns (ok replies, failures: name → reason).
        ``straggler`` False: the spec's straggler timeout is not applied (the consistency, reveal and unmask
        stages, where any client missing aborts the round: a slow live one is waited for, review s38 G1)."""
        by_node = {m.metadata.dst_node_id: c for c, m in msgs.items()}
        if counters is not None:
            for c, m in msgs.items():
                counters.setdefault(c, [0, 0])[1] += message_bytes(m)
        t0 = time.monotonic()
        strag = self.spec.straggler_timeout_s if straggler else 0.0
        ended: list[str] = []
        replies = send_and_receive(grid, list(msgs.values()), timeout, strag, ended=ended)
        by_msg = {m.metadata.message_id: c for c, m in msgs.items()}  # the IDs the push gave them
        ok: dict[str, Message] = {}
        fail: dict[str, str] = {}
        gone: dict[str, str] = {}
        for rep in replies:
            found = by_node.get(rep.metadata.src_node_id)
            if found is None:
                # the SuperLink's own error reply for a node it declared gone (NODE_UNAVAILABLE; flwr's
                # create_message_error_unavailable_res_message: src_node_id is the SuperLink's): the client is
                # lost, as after a timeout, but with the right reason (review s37 F6). Only ever a failure
                c_lost = by_msg.get(rep.metadata.reply_to_message_id) if rep.has_error() else None
                if c_lost is not None:
                    gone[c_lost] = (f"node unavailable (SuperLink: {rep.error.reason}, error {rep.error.code}), "
                                    f"reported within {time.monotonic() - t0:.1f} s")
                continue
            c = found
            if rep.has_error():
                fail[c] = f"error {rep.error.code}: {rep.error.reason}"
                continue
            why = self._refusal(rep, c, msgs[c])
            if why:
                fail[c] = f"reply refused: {why}"
                log.warning("%s stage of round %s: refused the reply of node %s as client %s: %s",
                            msgs[c].content.config_records[CFG]["stage"], msgs[c].content.config_records[CFG]["round"],
                            rep.metadata.src_node_id, c, why)
                continue
            ok[c] = rep
            if counters is not None:
                counters.setdefault(c, [0, 0])[0] += message_bytes(rep)
        silent = (f"no reply within the straggler timeout {strag:g} s after the last reply "
                  f"({_stage_of(msgs)} stage, {time.monotonic() - t0:.1f} s in)" if ended
                  else f"no reply within {timeout} s")
        for c in msgs:
            if c not in ok and c not in fail:
                fail[c] = gone.get(c, silent)
        return ok, fail

    def _msg(self, grid: Any, node: int, content: dict[str, Any], r: int, message_type: str = "train") -> Message:
        """One message to ``node``, with a fresh reply nonce (128 bits) that its signed reply binds."""
        content[CFG][NONCE] = secrets.token_hex(16)
        return Message(RecordDict(content), dst_node_id=node, message_type=message_type, group_id=str(r))

    def connect(self, grid: Any) -> tuple[dict[str, int], dict[str, float]]:
        """Wait for the nodes and ask each new one its client name and sample count until every
        client of the spec has answered: (name → node id, name → weight). A reply that fails the
        identity check, or an error, is logged and its node never asked again; the run fails
        after ``node_wait_s`` with the clients still missing and the refusals. The spec's ``absent``
        clients (lost before this run: an earlier segment of ``labqfl run`` over nodes) are not waited for
        and are in the result only if they answered with the others; :meth:`round` counts the others
        dropped before masking."""
        t0 = time.monotonic()
        absent = set(self.spec.absent_names)
        asked: set[int] = set()
        names: dict[str, int] = {}
        weights: dict[str, float] = {}
        refused: dict[int, str] = {}
        while True:
            new = [nid for nid in grid.get_node_ids() if nid not in asked]
            if new:
                asked.update(new)
                self._setup_nodes(grid, new, names, weights, refused)
            missing = [c for c in self.spec.names if c not in names and c not in absent]
            waited = time.monotonic() - t0
            if missing and 0 < self.spec.missing_ok_after_s < waited:
                self._go_without(missing, names, waited)
                missing = []
            if not missing:  # a client lost before the run (``absent``) is not waited for
                here = [c for c in self.spec.names if c in names]
                return {c: names[c] for c in here}, {c: weights[c] for c in here}
            if waited > self.spec.node_wait_s:
                raise SecureAggregationError(
                    f"no SuperNode answered as client(s) {missing} within {self.spec.node_wait_s:.0f} s; got "
                    f"{sorted(names)}" + (f"; refused: {refused}" if refused else ""))
            time.sleep(0.2)

    def _go_without(self, missing: list[str], names: dict[str, int], waited: float) -> None:
        """``missing_ok_after_s``: the clients still missing after it are counted absent (:meth:`round` drops them
        before masking) if the rounds can complete without them (:func:`round_shortfall`), else one error line."""
        here = [c for c in self.spec.names if c in names]
        if (short := round_shortfall(self.spec, here, deployed=self._deployed())) is not None:
            raise SecureAggregationError(
                f"no SuperNode answered as client(s) {missing} within {waited:.0f} s of this Flower run's start "
                f"(its SuperNodes were up before: a node lost at the start), and the rounds cannot go on without "
                f"them: {short}")
        log.warning("no SuperNode answered as client(s) %s within %.0f s: starting without them (dropped before "
                    "masking in every round)", missing, waited)
        self.missing_at_start = list(missing)

    def _setup_nodes(self, grid: Any, nids: list[int], names: dict[str, int], weights: dict[str, float],
                     refused: dict[int, str]) -> None:
        """The setup query to ``nids``; accepted answers go into ``names``/``weights``, refused
        ones (error, unknown name, failed identity check) into ``refused`` (node id → reason)."""
        sent: dict[int, Message] = {}
        for nid in nids:
            cfg = dict(self.spec.to_config(), stage="setup", round=0, run_tag=self.run_tag, **self._signed())
            sent[nid] = self._msg(grid, nid, {CFG: ConfigRecord(cfg)}, 0, "query.labqfl_setup")
        for rep in send_and_receive(grid, list(sent.values()), self.spec.stage_timeout_s):
            nid = rep.metadata.src_node_id
            if nid not in sent:
                continue
            if rep.has_error():
                refused[nid] = f"setup failed: {rep.error.reason}"
            else:
                c = rep.content.config_records[CFG]
                name = str(c["name"])
                why = (f"claims {name!r}, not a client of this run" if name not in self.spec.names
                       else self._refusal(rep, name, sent[nid]))
                if not why and name in names:
                    raise SecureAggregationError(f"two SuperNodes claim client name {name}")
                if not why:
                    names[name] = nid
                    weights[name] = float(c["num_examples"])  # type: ignore[arg-type]
                    continue
                refused[nid] = f"refused as {name}: {why}"
            log.warning("setup: node %s %s", nid, refused[nid])

    def words(self, n_params: int) -> int:
        """Words per upload: the parameter count, or the DP plan's padded length d'."""
        if self.dp is None:
            return n_params
        if self.dp.n_params != n_params:
            raise SecureAggregationError(f"the DP plan is for {self.dp.n_params} parameters, the model has {n_params}")
        return int(self.dp.d_pad)

    # ----------------------------------------------------------------------------- one round
    def round(self, grid: Any, r: int, params: np.ndarray, nodes: dict[str, int],
              weights: dict[str, float], *, end: bool = True) -> FlowerRound:
        """Round ``r``: keys, mask (reveal or unmask after dropouts) and, with ``end``, the end
        message. Without it (:meth:`run`, every round but a run's last) the next ``round`` call's
        keys message ends this round at the nodes (:meth:`_end_round`)."""
        spec, cfg = self.spec, self.cfg
        n = self.words(int(params.size))
        lost = [c for c in spec.names if c not in nodes and (c in spec.absent_names or c in self.missing_at_start)]
        clients = [c for c in spec.names if c in nodes or c in lost] if lost else list(nodes)  # loop order C1..CN
        graph = cfg.pairs(clients)
        counters: dict[str, list[int]] = {}
        timing: dict[str, float] = {}
        timeout = spec.stage_timeout_s

        # 1. keys (it also ends the previous round at every node: see _end_round)
        t0 = time.perf_counter()
        msgs = {}
        for c in (c for c in clients if c not in lost):
            d = self._base("keys", r, n)
            d["master_pairs"] = [p for p in graph if split_pair(p)[0] == c]
            if spec.keys == "qkd":
                d["slave_pairs"] = [p for p in graph if split_pair(p)[1] == c]
            msgs[c] = self._msg(grid, nodes[c], {CFG: ConfigRecord(d)}, r)
        ok, fail = self._exchange(grid, msgs, timeout, counters)
        fail.update({c: LOST_BEFORE_RUN if c in spec.absent_names else MISSING_AT_START for c in lost})  # never messaged
        self._unfinished = None  # delivered with the keys messages
        timing["keys"] = time.perf_counter() - t0
        for c, why in fail.items():
            log.warning("round %d: client %s dropped before masking (%s)", r, c, why)
        part = [c for c in clients if c in ok]
        state: dict[str, Any] = {"mask_sent": False, "lost": set(), "clients": clients}
        try:
            ok, fail = self._keep_to_pin(grid, r, n, nodes, ok, fail, part)
            part = [c for c in clients if c in ok]
            pre_drop = [c for c in clients if c not in ok]
            state["lost"] = set(pre_drop)
            return self._finish_round(grid, r, params, nodes, weights, graph, ok, fail, part, pre_drop, counters,
                                      timing, state, end)
        except BaseException:
            self._abort(grid, r, n, nodes, [c for c in part if c not in state["lost"]], bool(state["mask_sent"]))
            raise

    def _keep_to_pin(self, grid: Any, r: int, n: int, nodes: dict[str, int], ok: dict[str, Message],
                     fail: dict[str, str], part: list[str]) -> tuple[dict[str, Message], dict[str, str]]:
        """Self-masks in a deployment, after the keys stage: a node that signed a survivor set S (with none dropped)
        for this round of the job before names it in its keys reply (a node holding one with dropped clients
        refused the keys stage). Such a round can only be unmasked over S again, so the round keeps to S: a
        participant outside S (a client back that was absent then) is left out before masking, its reservations
        released unread; if S cannot be formed (a client of S missing, or nodes naming different sets) the round is
        aborted before masking. Before, every participant masked — spending its pads — and the nodes of S refused
        at the mask stage (review s37 F4; session 38: a job resumed after a segment run without an absent client)."""
        pins = {c: tuple(json.loads(str(ok[c].content.config_records[CFG][PINNED]))) for c in part
                if PINNED in ok[c].content.config_records[CFG]}
        if not pins or not self._deployed():
            return ok, fail
        sets = sorted(set(pins.values()))
        if len(sets) > 1 or not set(sets[0]) <= set(part):
            raise SecureAggregationError(
                f"round {r} aborted before masking: its nodes signed survivor set(s) {[list(x) for x in sets]} for "
                f"this round of job {self.spec.job()!r} before (pinned: {pins}), and the clients that answered the "
                f"keys stage, {part}, cannot form it; the round can be retrained over that set only (bring back its "
                f"clients, or a new job: `labqfl run` another --seed); failures: {fail}")
        out = [c for c in part if c not in sets[0]]
        if out:
            why = (f"not in the survivor set {list(sets[0])} its nodes signed for round {r} of job {self.spec.job()!r} "
                   "before: left out before masking")
            log.warning("round %d: client(s) %s %s", r, out, why)
            self._abort(grid, r, n, nodes, out, False)  # their reservations released: no partner saw the refs
        return {c: m for c, m in ok.items() if c not in out}, {**fail, **dict.fromkeys(out, why)} if out else fail

    def _abort(self, grid: Any, r: int, n: int, nodes: dict[str, int], clients: list[str], mask_sent: bool) -> None:
        """Tell the round's reachable clients that round r is given up, so they finish their key
        reservations: consumed (spent) if a mask message was sent, else released (no partner saw
        the refs). Best effort: a client that does not answer finishes them at its next message."""
        if not clients:
            return
        d = self._base("abort", r, n)
        d["mask_sent"] = mask_sent
        msgs = {c: self._msg(grid, nodes[c], {CFG: ConfigRecord(dict(d))}, r) for c in clients}
        try:
            _, fail = self._exchange(grid, msgs, self.spec.stage_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the round's own error is the one to report
            log.warning("round %d: abort message failed (%s)", r, exc)
            return
        if fail:
            log.warning("round %d: abort not acknowledged by %s", r, sorted(fail))

    def _finish_round(self, grid: Any, r: int, params: np.ndarray, nodes: dict[str, int], weights: dict[str, float],
                      graph: list[str], ok: dict[str, Message], fail: dict[str, str], part: list[str],
                      pre_drop: list[str],
                      counters: dict[str, list[int]], timing: dict[str, float], state: dict[str, Any],
                      end: bool) -> FlowerRound:
        cfg = self.cfg
        q, n = cfg.q, self.words(int(params.size))
        pairs, t_share, levels = self._plan_round(r, graph, ok, fail, part, pre_drop, weights)
        info: dict[str, Any] = {c: dict(ok[c].content.config_records[CFG]) for c in part}
        # 2. refs (qkd): the masters tag their refs and their slaves' nonces
        if self.spec.keys == "qkd" and (failed := self._refs_stage(grid, r, n, nodes, pairs, info, counters, timing)):
            for c, why in failed.items():
                log.warning("round %d: client %s dropped before masking (refs stage: %s)", r, c, why)
            fail = {**fail, **{c: f"refs stage: {why}" for c, why in failed.items()}}
            part = [c for c in part if c not in failed]
            pre_drop = [c for c in state["clients"] if c not in part]
            ok = {c: ok[c] for c in part}
            pairs, t_share, levels = self._plan_round(r, graph, ok, fail, part, pre_drop, weights)

        # 3. mask
        ok2, fail2, uploads = self._mask_stage(grid, r, n, params, nodes, pairs, part, levels, t_share, info, counters,
                                        timing, state)
        survivors = [c for c in part if c in uploads]
        post_drop = [c for c in part if c not in uploads]
        state["lost"].update(post_drop)
        for c in post_drop:
            log.warning("round %d: client %s lost after masking (%s)", r, c, fail2.get(c))
        state["reasons"] = {c: why for c, why in {**fail, **fail2}.items() if c in pre_drop or c in post_drop}
        if (short := cfg.too_few_survivors(len(survivors))) is not None:
            raise SecureAggregationError(
                f"round {r} aborted: {len(survivors)} survivor(s) after dropouts {post_drop}, {short}; "
                + "; ".join(f"{c}: {fail2.get(c, 'no upload')}" for c in post_drop))
        if self.dp is None and not any(levels[c] for c in survivors):
            # as secure_round (labqfl.fl.secure): nothing to average, so no partner reveals a key for it
            raise SecureAggregationError(
                f"round {r} aborted before any key reveal: the surviving clients {survivors} all have 0 "
                f"quantisation levels (FedAvg weight share < 1/(N·L) at q = {cfg.q}; lost after masking: "
                f"{post_drop}); nothing to average")

        # 4. reveal (dropout recovery) — or, with self-masks, unmask (always)
        revealed: dict[str, np.ndarray] = {}
        need: list[str] = []
        if cfg.self_masks:
            total, need, n_shares = self._unmask(grid, r, n, nodes, ok2, info, pairs, part, survivors, post_drop,
                                                 t_share, uploads, counters, timing)
        elif post_drop:
            need, revealed = self._reveal_stage(grid, r, n, nodes, info, pairs, survivors, post_drop, counters,
                                                timing)

        # 5. sum, unmask, dequantise
        if not cfg.self_masks:
            n_shares = 0
            total = aggregate(uploads, q, dropped=set(post_drop), revealed=revealed,
                              pairs=pairs if post_drop else None)
        agg, eps_spent = self._decode(total, r, survivors, levels)
        if end:
            self._end_round(grid, r, n, nodes, survivors, timing)
        else:
            self._unfinished = (r, n, survivors)
        fr = self._round_record(r, n, ok2, weights, part, pre_drop, post_drop, survivors, pairs, need, counters,
                                timing, agg, t_share, n_shares, eps_spent)
        fr.dropped_reasons = state["reasons"]
        return fr

    def _refs_stage(self, grid: Any, r: int, n: int, nodes: dict[str, int], pairs: list[str], info: dict[str, Any],
                    counters: dict[str, list[int]], timing: dict[str, float]) -> dict[str, str]:
        """QKD: send each master of the round's ``pairs`` its slaves' nonces; put its answered
        refs tags into ``info[master]["tag.<pair>"]``. Returns the clients that failed (name →
        reason): a master that did not answer a tag, or a slave whose keys reply had no nonce."""
        t0 = time.perf_counter()
        failed = {split_pair(p)[1]: f"no nonce for pair {p} in its keys reply" for p in pairs
                  if f"nonce.{p}" not in info[split_pair(p)[1]]}
        asked: dict[str, list[str]] = {}
        for p in pairs:
            a, b = split_pair(p)
            if a not in failed and b not in failed:
                asked.setdefault(a, []).append(p)
        msgs = {}
        for c, mine in asked.items():
            d = self._base("refs", r, n)
            d["pairs"] = mine
            for p in mine:
                d[f"nonce.{p}"] = str(info[split_pair(p)[1]][f"nonce.{p}"])
            msgs[c] = self._msg(grid, nodes[c], {CFG: ConfigRecord(d)}, r)
        ok, fail = self._exchange(grid, msgs, self.spec.stage_timeout_s, counters) if msgs else ({}, {})
        timing["refs"] = time.perf_counter() - t0
        for c, rep in ok.items():
            got = rep.content.config_records[CFG]
            if missing := [p for p in asked[c] if f"tag.{p}" not in got]:
                fail[c] = f"no refs tag for pair(s) {missing}"
                continue
            info[c].update({f"tag.{p}": str(got[f"tag.{p}"]) for p in asked[c]})
            # deployment: the master's signature per pair and its certificate, relayed to each slave
            info[c].update({f"refsig.{p}": got[f"refsig.{p}"] for p in asked[c] if f"refsig.{p}" in got})
            if "refcert" in got:
                info[c]["refcert"] = str(got["refcert"])
        return {**failed, **fail}

    def _plan_round(self, r: int, graph: list[str], ok: dict[str, Message], fail: dict[str, str], part: list[str],
                    pre_drop: list[str], weights: dict[str, float]) -> tuple[list[str], int, dict[str, int]]:
        """After the keys stage: check enough clients answered and the graph holds together; return
        the pairs between them, the Shamir threshold (0 without self-masks) and each client's levels."""
        cfg = self.cfg
        if (short := cfg.too_few_survivors(len(part))) is not None:
            raise SecureAggregationError(
                f"round {r} aborted: {len(part)} client(s) answered the keys stage, {short}; failures: {fail}")
        if self._deployed() and (short := round_shortfall(self.spec, part)) is not None:
            # too few to sign a survivor set: refused before any mask word is read (reservations released)
            raise SecureAggregationError(f"round {r} aborted before masking: {short}; failures: {fail}")
        pairs = [p for p in graph if all(x in ok for x in split_pair(p))]
        if len(components(part, pairs)) > 1:
            raise SecureAggregationError(f"round {r} aborted: the clients lost before masking ({pre_drop}) split the mask graph")
        t_share = 0
        if cfg.self_masks:
            t_share = cfg.threshold if cfg.threshold is not None else default_threshold(part, pairs)
            check_threshold(part, pairs, t_share, cfg.q)
        if self.dp is None:
            b = cfg.check_bit_budget(len(part))
            levels = dict(zip(part, (int(m) for m in weight_ranges([weights[c] for c in part], b)), strict=True))
        else:  # DP: equal weights (a weight would scale a client's sensitivity); plan_dp sized the budget
            levels = dict.fromkeys(part, 1)
        return pairs, t_share, levels

    def _mask_config(self, r: int, n: int, c: str, pos: int, pairs: list[str], part: list[str], levels: dict[str, int],
                     t_share: int, info: dict[str, Any]) -> dict[str, Any]:
        """The mask message's config for client ``c``: its pairs, levels and position, and per pair the
        master's key references (QKD) or the peer's public key (CSPRNG)."""
        cfg = self.cfg
        d = self._base("mask", r, n)
        mine = [p for p in pairs if c in split_pair(p)]
        d.update(pairs=mine, levels=levels[c], position=pos, participants=part)
        if cfg.self_masks:
            d["threshold"] = t_share
        if self.dp is not None:
            d["dp_plan"] = json.dumps(self.dp.as_dict())
        for p in mine:
            a, bb = split_pair(p)
            peer = bb if a == c else a
            if self.spec.keys == "qkd":
                if bb == c:  # the slave: the master's refs, its refs tag key and tag (checked at the slave)
                    d[f"refs.{p}"] = info[a][f"refs.{p}"]
                    d[f"reftag.{p}"] = info[a][f"reftag.{p}"]
                    d[f"tag.{p}"] = info[a][f"tag.{p}"]
                    if f"refsig.{p}" in info[a]:  # deployment: the master's signature, checked at the slave
                        d[f"refsig.{p}"], d[f"refcert.{p}"] = info[a][f"refsig.{p}"], info[a].get("refcert", "")
                    if f"void.{p}" in info[a]:  # the master's spent keys, for a slave out of step
                        d[f"void.{p}"] = info[a][f"void.{p}"]
                    if cfg.self_masks:
                        d[f"refpad.{p}"] = info[a][f"refpad.{p}"]
            else:
                d.update(_pk_fields(info, peer))
        return d

    def _mask_stage(self, grid: Any, r: int, n: int, params: np.ndarray, nodes: dict[str, int], pairs: list[str],
                    part: list[str], levels: dict[str, int], t_share: int, info: dict[str, Any],
                    counters: dict[str, list[int]], timing: dict[str, float],
                    state: dict[str, Any],
                    ) -> tuple[dict[str, Message], dict[str, str], dict[str, np.ndarray]]:
        """Send the mask messages (with the global model); return (replies, failures, masked uploads).
        A malformed reply (:meth:`_checked_upload`) moves to the failures: that client is lost after
        masking, as one that did not answer, and the round goes on without it if enough survive."""
        t0 = time.perf_counter()
        msgs = {}
        for pos, c in enumerate(part):
            d = self._mask_config(r, n, c, pos, pairs, part, levels, t_share, info)
            content = {CFG: ConfigRecord(d), "params": ArrayRecord({"params": Array(np.asarray(params, dtype=np.float64))})}
            msgs[c] = self._msg(grid, nodes[c], content, r)
        state["mask_sent"] = True
        ok2, fail2 = self._exchange(grid, msgs, self.spec.stage_timeout_s, counters)
        timing["mask"] = time.perf_counter() - t0
        uploads: dict[str, np.ndarray] = {}
        for c, rep in list(ok2.items()):
            try:
                uploads[c] = self._checked_upload(rep, c, n, pairs, part)
            except SecureAggregationError as exc:
                # lost after masking, as a dropout: its partners reveal (or, with self-masks, the
                # survivors unmask without its self-mask); its reply is not kept
                fail2[c] = f"malformed masked upload: {exc}"
                del ok2[c]
                log.warning("round %d: the masked upload of client %s is malformed (%s); %s is treated as lost "
                            "after masking", r, c, exc, c)
        return ok2, fail2, uploads

    def _checked_upload(self, rep: Message, c: str, n: int, pairs: list[str], part: list[str]) -> np.ndarray:
        """Client ``c``'s masked upload from its mask reply, after checking everything the later stages
        read of that reply: ``n`` words of ``uint{q}``; with self-masks a ciphertext of ``n`` share
        words for each of its share holders. Raises :class:`SecureAggregationError` naming what is wrong.
        The clear metrics are not checked here: a bad one (a loss that went to inf beside a finite update)
        must never lose the client after masking — its partners would then reveal its pair keys to a server
        that holds its masked upload (second review s34 F1); :meth:`_metrics_of` leaves it out instead."""
        q = self.cfg.q
        try:
            rec = rep.content.array_records.get("masked")
            if rec is None or "masked" not in rec:
                raise SecureAggregationError("the reply holds no masked upload")
            up = uint_array(rec["masked"].numpy(), q)
            if up.size != n:
                raise SecureAggregationError(f"masked upload has {up.size} values, expected {n}")
            if self.cfg.self_masks:
                cts = rep.content.array_records.get("shares", ArrayRecord())
                for h in holders_of(c, part, pairs):
                    if h == c:
                        continue
                    if h not in cts:
                        raise SecureAggregationError(f"no self-mask share for its holder {h}")
                    ct = np.asarray(cts[h].numpy())
                    if ct.dtype != share_dtype(q) or ct.size != n:
                        raise SecureAggregationError(f"self-mask share for {h} has {ct.size} values of {ct.dtype}, "
                                                     f"expected {n} of {share_dtype(q)}")
        except (KeyError, TypeError, ValueError) as exc:
            raise SecureAggregationError(f"unreadable mask reply ({type(exc).__name__}: {exc})") from None
        return up

    @staticmethod
    def _metrics_of(rep: Message) -> tuple[float, int] | None:
        """``(train_loss, clipped_values)`` of a mask reply's clear ``metrics`` record, or None when it has
        none, or a loss that is not a finite number, or a clipped count that is not a count: then the round's
        loss and clipped count leave that client out (with a warning), and nothing else follows from it."""
        try:
            mets = rep.content.metric_records.get("metrics")
            if mets is None or "train_loss" not in mets:
                return None
            loss, clipped = mets["train_loss"], mets.get("clipped_values", 0)
            if isinstance(loss, list) or isinstance(clipped, list) or not np.isfinite(float(loss)):
                return None
            if float(clipped) != int(clipped) or int(clipped) < 0:
                return None
            return float(loss), int(clipped)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None

    def _reveal_stage(self, grid: Any, r: int, n: int, nodes: dict[str, int], info: dict[str, Any],
                      pairs: list[str], survivors: list[str], post_drop: list[str], counters: dict[str, list[int]],
                      timing: dict[str, float]) -> tuple[list[str], dict[str, np.ndarray]]:
        """Dropout recovery without self-masks: ask the survivors for the keys they shared with the
        clients lost after masking; return (revealed pairs, their key words)."""
        if len(components(survivors, pairs)) > 1:
            raise SecureAggregationError(
                f"round {r} aborted before any key reveal: dropouts {post_drop} split the survivors in the "
                f"mask graph, so unmasking would reveal partial sums; use a denser graph (larger k)")
        need = dangling_pairs(pairs, survivors, post_drop)
        t0 = time.perf_counter()
        msgs = {}
        for c in survivors:
            mine = [p for p in need if c in split_pair(p)]
            if not mine:
                continue
            d = self._base("reveal", r, n)
            d.update(pairs=mine, dropped=post_drop)
            for p in mine:
                a, bb = split_pair(p)
                peer = bb if a == c else a
                if self.spec.keys == "csprng":
                    d.update(_pk_fields(info, peer))
            msgs[c] = self._msg(grid, nodes[c], {CFG: ConfigRecord(d)}, r)
        ok3, fail3 = self._exchange(grid, msgs, self.spec.stage_timeout_s, counters, straggler=False)
        timing["reveal"] = time.perf_counter() - t0
        if fail3:
            raise SecureAggregationError(f"round {r} aborted: survivors failed to reveal keys: {fail3}")
        revealed: dict[str, np.ndarray] = {}
        for rep in ok3.values():
            for p, arr in rep.content.array_records["revealed"].items():
                revealed[p] = uint_array(arr.numpy(), self.cfg.q)
        return need, revealed

    def _decode(self, total: np.ndarray, r: int, survivors: list[str],
                levels: dict[str, int]) -> tuple[np.ndarray, float | None]:
        """Dequantise the exact sum (DP: decode it and account ε spent so far)."""
        if self.dp is not None:
            agg = dp_decode(total, self.dp, round_index=r, n_survivors=len(survivors))
            return agg, accounted_epsilon(self.dp.epsilon_round_zcdp, r, self.dp.delta)
        return dequantize_sum(total, clip=self.cfg.clip, total_levels=sum(levels[c] for c in survivors)), None

    def _end_round(self, grid: Any, r: int, n: int, nodes: dict[str, int], survivors: list[str],
                   timing: dict[str, float], timeout_s: float | None = None) -> None:
        """Tell the survivors the round is over: they finish its key reservations (consumed: the
        bits are overwritten in each store) and wipe its secrets.

        :meth:`run` sends it after the run's last round only. Between two rounds the next round's
        ``keys`` message does the same at every node before it reserves anything (the node finishes
        whatever an earlier round left: :func:`labqfl.fl.flower.client.labqfl_secagg_mod`), so a
        separate message would cost a whole exchange — about a third of a round's wall time in a
        deployment (docs/flower.md) — for nothing. If the run stops between two rounds (an error,
        Ctrl-C), :meth:`run` still sends it."""
        t0 = time.perf_counter()
        end_msgs = {c: self._msg(grid, nodes[c], {CFG: ConfigRecord(self._base("end", r, n))}, r) for c in survivors}
        self._exchange(grid, end_msgs, self.spec.stage_timeout_s if timeout_s is None else timeout_s)
        timing["end"] = time.perf_counter() - t0

    def _end_unfinished(self, grid: Any, nodes: dict[str, int]) -> None:
        """The run stops between two rounds: send the completed round's ``end`` that the next
        ``keys`` would have carried (best effort, waiting at most :data:`BEST_EFFORT_END_S` for the
        replies so that a failing run is not held up: a node that does not answer finishes the
        round's reservations at its next message)."""
        if self._unfinished is None:
            return
        r, n, survivors = self._unfinished
        self._unfinished = None
        try:
            self._end_round(grid, r, n, nodes, survivors, {}, min(self.spec.stage_timeout_s, BEST_EFFORT_END_S))
        except Exception as exc:  # noqa: BLE001 - the run's own error is the one to report
            log.warning("round %d: end message failed (%s)", r, exc)

    def _round_record(self, r: int, n: int, ok2: dict[str, Message], weights: dict[str, float], part: list[str],
                      pre_drop: list[str], post_drop: list[str], survivors: list[str], pairs: list[str],
                      need: list[str], counters: dict[str, list[int]], timing: dict[str, float], agg: np.ndarray,
                      t_share: int, n_shares: int, eps_spent: float | None) -> FlowerRound:
        """The round's :class:`FlowerRound` (accounting; no key material, no unmasked data).

        The clients' training losses and clipped-value counts travel in clear next to their masked
        uploads (docs/secure_aggregation.md §9). Under DP they are outside the accountant, so the
        server does not use them: the round's train loss is NaN and its clipped count 0."""
        cfg, q = self.cfg, self.cfg.q
        tl, n_clipped = float("nan"), 0
        if self.dp is None:
            mets = {c: self._metrics_of(ok2[c]) for c in survivors}
            for c in (c for c, m in mets.items() if m is None):
                log.warning("round %d: client %s sent no usable training metrics (a loss that is not a finite "
                            "number, or no clipped count); left out of the round's loss (its upload is kept)", r, c)
            good = {c: m for c, m in mets.items() if m is not None}
            if good:
                tl = float(np.average([m[0] for m in good.values()], weights=[weights[c] for c in good]))
            n_clipped = sum(m[1] for m in good.values())
        up = [counters[c][0] for c in part]
        down = [counters[c][1] for c in part]
        tag_bits = REFS_TAG_BITS if self.spec.keys == "qkd" else 0  # the refs tag key of each pair
        return FlowerRound(r, part, pre_drop, post_drop, len(pairs), cfg.key_bits_per_pair(n) + tag_bits,
                           q * n * len(need), float(np.mean(up)), float(np.mean(down)), timing,
                           n_clipped, tl, agg,
                           cfg.self_masks, t_share, share_bits(q) * n * n_shares if cfg.self_masks else 0,
                           eps_spent, tag_bits)

    def _unmask(self, grid: Any, r: int, n: int, nodes: dict[str, int], ok2: dict[str, Message],
                info: dict[str, Any], pairs: list[str], part: list[str], survivors: list[str], post_drop: list[str],
                t: int, uploads: dict[str, np.ndarray], counters: dict[str, list[int]],
                timing: dict[str, float]) -> tuple[np.ndarray, list[str], int]:
        """Self-masks: ask each survivor for its dropped partners' keys and its shares of surviving
        clients' self-masks (t holders each); return (exact sum, revealed pairs, shares received)."""
        spec, q = self.spec, self.cfg.q
        if post_drop and len(components(survivors, pairs)) > 1:
            raise SecureAggregationError(
                f"round {r} aborted before any key reveal: dropouts {post_drop} split the survivors in the "
                f"mask graph, so unmasking would reveal partial sums; use a denser graph (larger k)")
        try:
            chosen = choose_share_holders(survivors, part, pairs, t)
        except SecureAggregationError as exc:
            raise SecureAggregationError(f"round {r}: {exc}") from None
        need = dangling_pairs(pairs, survivors, post_drop) if post_drop else []
        cts = {c: ok2[c].content.array_records.get("shares", ArrayRecord()) for c in survivors}
        # deployment: every survivor signs the survivor set first (Bonawitz et al. 2017, ConsistencyCheck)
        cons = self._consistency(grid, r, n, nodes, survivors, post_drop, t, counters, timing) \
            if self.identity is not None or self.signed_spec is not None else {}
        t0 = time.perf_counter()
        msgs = {}
        for c in survivors:
            mine = [p for p in need if c in split_pair(p)]
            owners = [i for i in survivors if c in chosen[i]]
            d = self._base("unmask", r, n)
            d.update(pairs=mine, share_owners=owners, dropped=post_drop, survivors=survivors, **cons)
            rec = ArrayRecord()
            for o in owners:
                if o != c:
                    if c not in cts[o]:
                        raise SecureAggregationError(f"round {r}: {o} sent no self-mask share for {c}")
                    rec[o] = cts[o][c]
            if spec.keys == "csprng":
                for peer in {*(split_pair(p)[1] if split_pair(p)[0] == c else split_pair(p)[0] for p in mine),
                             *(o for o in owners if o != c)}:
                    d.update(_pk_fields(info, peer))
            msgs[c] = self._msg(grid, nodes[c], {CFG: ConfigRecord(d), "cts": rec}, r)
        ok3, fail3 = self._exchange(grid, msgs, spec.stage_timeout_s, counters, straggler=False)
        timing["unmask"] = time.perf_counter() - t0
        if fail3:
            raise SecureAggregationError(f"round {r} aborted: survivors failed to unmask: {fail3}")
        revealed: dict[str, np.ndarray] = {}
        got: dict[str, dict[str, np.ndarray]] = {c: {} for c in survivors}
        for c, rep in ok3.items():
            for p, arr in rep.content.array_records["revealed"].items():
                revealed[p] = uint_array(arr.numpy(), q)
            for o, arr in rep.content.array_records["shares"].items():
                got[o][c] = np.asarray(arr.numpy()).reshape(-1)
        total = aggregate(uploads, q, dropped=set(post_drop), revealed=revealed, pairs=pairs if post_drop else None)
        pos = {c: i + 1 for i, c in enumerate(part)}
        for i in survivors:
            hs = chosen[i]
            missing = [h for h in hs if h not in got[i]]
            if missing:
                raise SecureAggregationError(f"round {r}: no share of {i}'s self-mask from {missing}")
            total -= shamir_reconstruct([pos[h] for h in hs], np.stack([got[i][h] for h in hs]), q)
        return total, need, sum(len(v) for v in got.values())

    def _consistency(self, grid: Any, r: int, n: int, nodes: dict[str, int], survivors: list[str],
                     post_drop: list[str], t: int, counters: dict[str, list[int]],
                     timing: dict[str, float]) -> dict[str, Any]:
        """Self-masks in a deployment: the ``consistency`` stage (Bonawitz, Ivanov, Kreuter et al., "Practical
        Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017, round 3 *ConsistencyCheck*).
        Every survivor is sent the survivor set S and the dropped set D and answers its signature over them
        (:func:`~labqfl.fl.flower.identity.consistency_signed_bytes`) and its certificate; returns the fields
        (``conssig.<c>``, ``conscert.<c>``) every unmask message relays, so that each node sees the others
        signed the story it signed. Fewer than ``need`` survivors
        (:func:`~labqfl.fl.selfmask.consistency_need`), or any survivor that does not sign, aborts the round
        before any unmask (reservations consumed: the mask message was sent)."""
        spec = self.spec
        need = spec.consistency_need(t)
        if len(survivors) < need:
            raise SecureAggregationError(
                f"round {r} aborted before any unmask: {len(survivors)} survivor(s) {survivors} (lost after masking: "
                f"{post_drop}); a deployed self-mask round needs {need} = {CONSISTENCY_NEED_RULE} "
                f"survivors to sign its survivor set (c = {spec.tolerated_colluders()} colluding clients tolerated, "
                "signed 'colluders')")
        t0 = time.perf_counter()
        msgs = {}
        for c in survivors:
            d = self._base("consistency", r, n)
            d.update(survivors=survivors, dropped=post_drop)
            msgs[c] = self._msg(grid, nodes[c], {CFG: ConfigRecord(d)}, r)
        ok, fail = self._exchange(grid, msgs, spec.stage_timeout_s, counters, straggler=False)
        timing["consistency"] = time.perf_counter() - t0
        out: dict[str, Any] = {}
        for c, rep in ok.items():
            got = rep.content.config_records[CFG]
            sig, cert = got.get("conssig"), str(got.get("conscert", ""))
            try:
                if not isinstance(sig, bytes) or not cert:
                    raise ReplyRefused("no signature or certificate in its reply")
                if self.identity is not None and self.signed_spec is not None:
                    self.identity.verify_consistency(cert, sig, signer=c, run=self.run_tag,
                                                     spec_id=self.signed_spec.spec_id,
                                                     job=spec.job(), round_index=r,
                                                     survivors=survivors, dropped=post_drop)
            except ReplyRefused as exc:
                fail[c] = f"consistency signature refused: {exc}"
                continue
            out[f"conssig.{c}"], out[f"conscert.{c}"] = sig, cert
        if fail:
            raise SecureAggregationError(f"round {r} aborted before any unmask: survivor(s) did not sign the survivor "
                                         f"set {survivors} (dropped {post_drop}): {fail}")
        return out

    # --------------------------------------------------------------------------------- run
    def run(self, grid: Any, init_params: np.ndarray | None = None) -> Any:
        """The whole run (rounds ``spec.first_round``..``last_round``, from ``init_params``, default the
        model's seeded start); returns a :class:`~labqfl.fl.training.FederatedResult` (+ Flower rounds)."""
        from labqfl.fl.training import FederatedResult, RoundMetrics, evaluate

        spec = self.spec
        model, data = spec.model(), spec.data()
        if self.dp is None:
            self.cfg.check_bit_budget(spec.clients)
        elif spec.rounds > self.dp.rounds or spec.clients > self.dp.n_clients:
            raise SecureAggregationError(f"the DP plan accounts for {self.dp.rounds} rounds and {self.dp.n_clients} "
                                         f"clients, the run has {spec.rounds} and {spec.clients}")
        n_words = self.words(model.n_params)
        nodes, weights = self.connect(grid)
        if spec.self_masks and (self.identity is not None or self.signed_spec is not None):
            log.info("self-mask consistency stage: job %s, %d colluding client(s) tolerated, each round needs %d of "
                     "%d clients to survive and sign", spec.job(), spec.tolerated_colluders(), spec.consistency_need(),
                     spec.clients)
        params = model.init_params(spec.seed) if init_params is None else np.asarray(init_params, dtype=np.float64)
        loss0, acc0 = evaluate(model, params, data.x_test, data.y_test)
        result = FederatedResult(data.task, model.name, model.n_params, spec.keys, acc0, loss0)
        last = spec.last_round or spec.rounds
        try:
            for r in range(spec.first_round, last + 1):
                t0 = time.perf_counter()
                fr = self.round(grid, r, params, nodes, weights, end=r == last)
                params = params + fr.aggregate
                loss, acc = evaluate(model, params, data.x_test, data.y_test)
                self.rounds.append(fr)
                m = RoundMetrics(r, acc, loss, fr.train_loss, fr.key_bits_per_pair, fr.key_bits_per_pair * fr.pairs,
                                 fr.pairs, spec.q * n_words, 32 * model.n_params, fr.clipped_values,
                                 time.perf_counter() - t0, fr.privacy_epsilon_spent)
                result.rounds.append(m)
                log.info("flower round %d: test accuracy %.4f, dropped %s", r, acc,
                         fr.dropped_before_masking + fr.dropped_after_masking)
                if self.on_round is not None:
                    self.on_round(fr, params)
                if self.progress is not None:
                    self.progress(m)
        finally:
            self._end_unfinished(grid, nodes)
        result.final_params = params
        if self.dp is not None:
            result.privacy = self.dp.privacy()
        return result


def _pk_fields(info: dict[str, Any], peer: str) -> dict[str, Any]:
    """csprng: the fields that carry ``peer``'s X25519 public key of the round to a partner: the key
    (``pk.<peer>``) and, in a deployment, the peer's signature over it and its certificate
    (``pksig.<peer>``, ``pkcert.<peer>``), which the partner requires before deriving anything."""
    out = {f"pk.{peer}": info[peer]["pk"]}
    if "pksig" in info[peer]:
        out.update({f"pksig.{peer}": info[peer]["pksig"], f"pkcert.{peer}": str(info[peer].get("pkcert", ""))})
    return out


def flower_summary(rounds: Iterable[FlowerRound]) -> list[dict[str, Any]]:
    """JSON-ready per-round Flower accounting (no arrays)."""
    return [{"round": f.round, "participants": len(f.participants), "dropped_before_masking": f.dropped_before_masking,
             "dropped_after_masking": f.dropped_after_masking, "reveal_bits": f.reveal_bits,
             "upload_bytes_per_client": f.upload_bytes_per_client,
             "download_bytes_per_client": f.download_bytes_per_client, "stage_seconds": f.stage_seconds,
             "key_bits_per_pair": f.key_bits_per_pair, "tag_bits_per_pair": f.tag_bits_per_pair,
             "privacy_epsilon_spent": f.privacy_epsilon_spent, "dropped_reasons": f.dropped_reasons}
            for f in rounds]
