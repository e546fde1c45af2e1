"""Flower ClientApp: local training plus the client-side masking mod.

Message types (server → client; the payload's ConfigRecord ``"labqfl"`` holds the run spec and
the stage's fields):

- ``query.labqfl_setup``: the node answers its client name and sample count (public FedAvg weight).
- ``train`` with ``stage`` in ``keys | mask | reveal | end | abort``: handled by
  :func:`labqfl_secagg_mod`, a Flower *mod* wrapped around the training function:

  * ``keys``: the node first ends its previous round (its secrets wiped, its reservations consumed
    where they were tagged or read and released where never: between two rounds of a run the
    server sends no ``end``, the next ``keys`` carries it), and pins the message's run tag with its
    new reservations: every later stage of the round must carry it;
    then for each pair it masters it reserves q·P bits of its own key store (no bit is read) and
    a separate 256-bit refs tag key, and answers the refs (``refs.<pair>``, ``reftag.<pair>``,
    ``void.<pair>``); for each pair it is the slave of (``slave_pairs``) it draws a fresh 128-bit
    nonce, keeps it in the node state (``labqfl.nonce``) and answers it (``nonce.<pair>``)
    (``qkd``); or it answers a fresh X25519 public key (``csprng``), with signing keys in the node
    config (a deployment) also ``pksig``, its certificate key's signature over the key, the run and
    the round, and ``pkcert``, its certificate; a node that derives words or pads from a partner's
    relayed key (mask, reveal, unmask) first checks it (:func:`_peer_public_keys`: with signing keys
    or a CA configured the partner's signature is required);
  * ``refs`` (``qkd`` only): a master answers, per pair asked, ``tag.<pair>``: the Wegman–Carter
    tag (:meth:`~labqfl.fl.flower.keys.NodeKeyStore.tag_refs`) of
    :func:`~labqfl.fl.flower.keys.refs_statement` over the run, round, pair, the slave's nonce and
    the refs *as its own store and state hold them*; once per pair and round (a second request is
    refused: one tag per tag key), and from then on that pair's reservations are never released;
    with signing keys in the node config (a deployment) also ``refsig.<pair>``, its certificate
    key's signature over the same statement, and ``refcert``, its certificate;
  * ``mask``: the mod calls the training function (which returns the float update), clips and
    quantises it on the node's integer range, reads its pair keys, adds the pairwise masks, wipes
    the keys and answers only the masked ``uint{q}`` vector — the unmasked update never leaves the
    mod. A slave first checks every slave pair's refs (:func:`_check_refs_tag`: it pops its nonce,
    with signing keys configured requires the master's signature (:func:`_check_refs_signature`),
    reserves and reads the tag key, compares the master's tag over the refs as received) and only
    then discards the void refs and reserves the master's refs; a mismatch refuses the round
    (``SecureAggregationError``) with nothing masked;
  * ``reveal``: a survivor consumes and answers the keys it shared with dropped partners
    (dropout recovery; those keys are spent either way);
  * with self-masks (``spec.self_masks``, :mod:`labqfl.fl.selfmask`): at ``keys`` a master also
    reserves 2·(q+1)·P pad bits per pair; at ``mask`` the node adds its self-mask (OS CSPRNG),
    Shamir-shares it among itself and its partners and answers each partner's share under a
    one-time pad (``shares``); its own share waits in the node state (``labqfl.ownshare``) — no
    key bits; ``unmask`` replaces ``reveal``: the node answers the keys of its dropped partners and
    its shares of surviving clients' self-masks, after its :class:`~labqfl.fl.selfmask.UnmaskGuard`
    (state ``labqfl.guard``: peer → kind revealed this round) has refused any request for both
    kinds about one peer;
  * ``consistency`` (self-masks, a deployment: signing keys and the network CA; Bonawitz et al., CCS 2017,
    round 3 *ConsistencyCheck*): the server names the round's survivors S and dropped D; the node checks
    them against the participants of its own mask stage (:data:`STATE_PLAN`), records (S, D) for
    (job, round) in its own data folder (one pair per job and round, ever) and answers its certificate
    key's signature over them (:func:`_consistency_stage`); at ``unmask`` such a node requires its own
    record of the message's (S, D) and ``max(t, min_survivors, N/2 + 1)`` survivors' signatures over it
    before anything is read (:func:`_check_consistency`);
  * with distributed DP (``spec.dp_epsilon`` > 0, :mod:`labqfl.fl.dp`): the mask message carries
    the server's :class:`~labqfl.fl.dp.DPPlan` (public: γ, σ, Δ₂, d'); at ``mask`` the node
    L2-clips, rotates, rounds and adds its own discrete Gaussian noise N_Z(0, σ²) per word
    (:func:`~labqfl.fl.dp.dp_encode`, rounding and noise from OS-seeded generators of the node)
    *before* any mask, and masks the d' words; every other stage works on d' words;
  * ``end`` (after a run's last round, or a run stopped between rounds): every reservation of
    the round is consumed (bits overwritten in the store);
    ``abort``: the server gave the round up — reservations are consumed, or released if the
    server says no mask message was sent (then no partner ever saw the refs).

In a deployment every reply (setup included) is signed by :func:`labqfl_identity_mod` with the
node's certificate key over the server's run ID and per-message nonce, the stage, the round, the
claimed client name and a digest of the reply (:mod:`labqfl.fl.flower.identity`); the ServerApp
refuses a reply whose certificate is not the claimed client's.

Node state (Flower's ``Context.state``, which crosses process boundaries: SuperNode ↔ ClientApp
process, simulation ↔ Ray worker) holds **no key bits**: for ``qkd`` only the round number, key
IDs and pair names of the node's reservations (``labqfl.resv``, with the void refs it announced) and
its slave nonces (``labqfl.nonce``) — the bits stay reserved in the node's key store between stages
and are read only inside the call that uses them; for ``csprng``
the round's ephemeral X25519 private key (``labqfl.secret``, not QKD material; see
``docs/flower.md``). Leftovers of an unfinished round are finished at the node's next message
(consumed if tagged or read, else released).

What the node holds itself, not from the message (review s34): its key mode (node config
``labqfl-keys``, ``qkd`` wherever a key store is configured), the run tag of its round (pinned at
``keys``), which reservations it already masked with (never twice), the floors of a mask plan
(≥ 2 participants, ≥ 1 pair), and the upload length and DP plan it computes from the spec. The
spec itself (participants, graph, thresholds, DP ε, rounds, ...) comes with every message from the
server; a node with the network CA configured (a deployment) follows it only where it is exactly
the operator-signed spec the message also carries (:func:`_check_signed_spec`,
:mod:`labqfl.fl.flower.specsig`; s35), so the server can no longer change the run's settings as a
whole. A simulation without node keys follows the server's spec (stated in its security line).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import uuid
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import LabqflError, SecureAggregationError
from labqfl.fl.dp import DPPlan, dp_encode, noise_rng
from labqfl.fl.flower.keys import (
    REFS_NONCE_BYTES,
    REFS_TAG_BITS,
    NodeKeyStore,
    ecdh_pad_words,
    ecdh_words,
    new_ecdh_key,
    refs_statement,
    stochastic_rng,
)
from labqfl.fl.flower.spec import FlowerSpec, as_float64
from labqfl.fl.masks import components, mask_graph, mask_update, pair_sign, split_pair
from labqfl.fl.quantize import quantize, uint_dtype
from labqfl.fl.selfmask import (
    CONSISTENCY_NEED_RULE,
    UnmaskGuard,
    check_threshold,
    default_threshold,
    draw_self_mask,
    encrypt_share,
    holders_of,
    shamir_share,
    share_bits,
    share_dtype,
)
from labqfl.log import get_logger

log = get_logger(__name__)


def _cfg_int(rec: Any, key: str) -> int:
    """An integer field of a Flower ConfigRecord (its values are a loose union type)."""
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"config field {key!r} must be an integer, got {v!r}")
    return int(v)


def _cfg_strs(rec: Any, key: str) -> list[str]:
    """A list-of-strings field of a Flower ConfigRecord (absent → empty)."""
    v = rec.get(key, [])
    if not isinstance(v, list):
        raise ValueError(f"config field {key!r} must be a list, got {v!r}")
    return [str(x) for x in v]

CFG = "labqfl"
STATE_RESV = "labqfl.resv"
STATE_SECRET = "labqfl.secret"
STATE_OWNSHARE = "labqfl.ownshare"
STATE_GUARD = "labqfl.guard"
STATE_NONCE = "labqfl.nonce"
#: the round this node already answered a mask message for: its pair keys mask one upload per round
STATE_MASKED = "labqfl.masked"
#: the operator-signed spec this node follows for a run tag (``run``, ``spec_id``): one signed spec per run
STATE_SPEC = "labqfl.spec"
#: self-masks: the round's participants and threshold as this node's mask stage checked them (``round``,
#: ``run``, ``participants``, ``t``): the consistency and unmask stages check the survivor set against them
STATE_PLAN = "labqfl.plan"
#: keys reply field (self-masks, a deployment): the survivor set S this node signed for the round of this job,
#: (S, ∅), as JSON; the server keeps the round's participants to S or aborts before masking
PINNED = "pinned"
PAD = "#pad"  # reservation name suffix of a pair's self-mask share pads
TAG = "#tag"  # reservation name suffix of a pair's refs tag key
#: node_config keys of a deployed SuperNode.
NODE_NAME = "labqfl-client"
NODE_KEYSTORE = "labqfl-keystore"
#: the node's key mode (qkd | csprng); default qkd where a key store is configured (review s34 F3)
NODE_KEYS = "labqfl-keys"
#: hard floors no message can lower (review s34 F2): a round's participants, a node's pairs
MIN_PARTICIPANTS = 2
NODE_DROP_ROUND = "labqfl-crash-in-round"  # tests: the ClientApp process dies after masking, before upload


def node_name(context: Context, spec: FlowerSpec | None = None) -> str:
    """This node's client name: ``node_config["labqfl-client"]`` (deployment), or in a simulation
    the spec's client at position partition-id (C{partition-id + 1} without a spec)."""
    nc = context.node_config
    if NODE_NAME in nc:
        return str(nc[NODE_NAME])
    if "partition-id" in nc:
        pid = int(nc["partition-id"])
        return spec.names[pid] if spec is not None else f"C{pid + 1}"
    raise SecureAggregationError(
        f"node has no client name: start the SuperNode with --node-config \"{NODE_NAME}='C1'\"")


def _keystore_dir(context: Context, spec: FlowerSpec) -> str:
    """The node's key store folder: node config ``labqfl-keystore``; a simulation (no CA, no signing key in
    the node config) may take the spec's ``keystore_dir``. A deployed node never does: that field is the
    server's unsigned word (review s35 second look F5: a node without ``labqfl-keystore`` opened a store in
    a folder the server named)."""
    from labqfl.fl.flower.identity import NODE_CA, NODE_CERT

    nc = context.node_config
    own = str(nc.get(NODE_KEYSTORE, "") or "")
    if not own and spec.keystore_dir and (NODE_CA in nc or NODE_CERT in nc):
        raise SecureAggregationError(
            f"keys qkd: the server's message names the key store folder {spec.keystore_dir!r}, but this node has "
            f"the network CA or a signing key (a deployment) and no {NODE_KEYSTORE!r} of its own: refused (a deployed "
            f"node opens only the key store its operator configured; start it with --node-config "
            f"\"{NODE_KEYSTORE}='DIR'\" or with labqfl node supernode)")
    d = own or spec.keystore_dir
    if not d:
        raise SecureAggregationError(
            f"keys qkd: node has no key store folder (node_config {NODE_KEYSTORE!r} or the spec's keystore_dir)")
    return d


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


# ------------------------------------------------------------ node state (no key material)
def _reservations(context: Context) -> dict[str, Any] | None:
    """This node's qkd reservations of its current round: ``{"round", "run", "kids": {pair: key ID},
    "read": [pairs], "masked": [pairs], "void": {pair: refs}}`` (key IDs, pair names and the void
    refs the node announced as master — no key bits), or None. ``run`` is the run tag of the keys
    stage that made them: every later stage of the round must carry it (review s34 F1). A name in
    ``read`` is never released: its bits were read, or (a master's mask and pad after the refs
    stage) its refs were authenticated. A name in ``masked`` was read for a mask (or share pad) and
    is never read for a mask again, whatever the run tag or participants of a later message. The
    key store keeps the same facts as delivery kinds (``reserve-tagged``, ``reserve-masked``, review
    s34 second look F2/F3): this state reaches the SuperNode only after the reply, and a crash in
    between loses it, so the store's refusals are the ones that hold; these marks add early, clear
    errors."""
    st = context.state
    if STATE_RESV not in st:
        return None
    rec = st.config_records[STATE_RESV]
    return {"round": int(rec["round"]), "run": str(rec.get("run", "")),  # type: ignore[arg-type]
            "kids": json.loads(str(rec["kids"])), "read": list(json.loads(str(rec["read"]))),
            "masked": list(json.loads(str(rec.get("masked", "[]")))), "void": json.loads(str(rec.get("void", "{}")))}


def _save_reservations(context: Context, r: int, kids: dict[str, str], read: list[str],
                       void: dict[str, Any] | None = None, *, run: str, masked: list[str]) -> None:
    context.state[STATE_RESV] = ConfigRecord({"round": r, "run": run, "kids": json.dumps(kids), "read": json.dumps(read),
                                              "masked": json.dumps(masked), "void": json.dumps(void or {})})


def _save_nonces(context: Context, r: int, nonces: dict[str, str]) -> None:
    """Keep this node's slave nonces of round ``r`` (pair → hex) in the node state."""
    context.state[STATE_NONCE] = ConfigRecord({"round": r, "nonces": json.dumps(nonces)})


def _pop_nonce(context: Context, r: int, pair: str) -> bytes | None:
    """Take this node's nonce for ``pair`` in round ``r`` out of the node state (at most once), or
    None when it holds none (never drawn, another round's, or already used)."""
    st = context.state
    if STATE_NONCE not in st or _cfg_int(st.config_records[STATE_NONCE], "round") != r:
        return None
    nonces = json.loads(str(st.config_records[STATE_NONCE]["nonces"]))
    got = nonces.pop(pair, None)
    _save_nonces(context, r, nonces)
    return None if got is None else bytes.fromhex(str(got))


def _clear_nonces(context: Context) -> None:
    if STATE_NONCE in context.state:
        del context.state[STATE_NONCE]


def _finish_reservations(context: Context, spec: FlowerSpec, name: str, *, release_unread: bool = False,
                         keep: tuple[str, ...] = ()) -> None:
    """Finish every reservation in the node state except ``keep``'s pairs: consume it (spent) —
    or release it when ``release_unread`` and the bits were never read at this end (the server
    sets it only when the partner never received the refs)."""
    res = _reservations(context)
    if res is None:
        return
    left = {p: k for p, k in res["kids"].items() if p in keep}
    todo = {p: k for p, k in res["kids"].items() if p not in keep}
    if todo:
        with NodeKeyStore(name, _keystore_dir(context, spec)) as ks:
            for p, kid in todo.items():
                ks.finish(kid, release=release_unread and p not in res["read"])
    if left:
        _save_reservations(context, res["round"], left, [p for p in res["read"] if p in left],
                           {p: v for p, v in res["void"].items() if p in left}, run=res["run"],
                           masked=[p for p in res["masked"] if p in left])
    else:
        del context.state[STATE_RESV]


def _clear_secret(context: Context) -> None:
    if STATE_SECRET in context.state:
        del context.state[STATE_SECRET]


def _clear_selfmask_state(context: Context) -> None:
    for k in (STATE_OWNSHARE, STATE_OWNSHARE + ".round", STATE_GUARD, STATE_PLAN):
        if k in context.state:
            del context.state[k]


def _load_guard(context: Context, r: int, name: str) -> UnmaskGuard:
    st = context.state
    if STATE_GUARD in st and _cfg_int(st.config_records[STATE_GUARD], "round") == r:
        return UnmaskGuard.from_dict(name, json.loads(str(st.config_records[STATE_GUARD]["kinds"])))
    return UnmaskGuard(name)


def _peer(name: str, pair: str) -> str:
    a, b = split_pair(pair)
    return b if a == name else a


def _key_id(run_tag: str, r: int, pair: str) -> str:
    return f"fl-{run_tag}-r{r}-{pair}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------- the mod
def labqfl_secagg_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client-side secure-aggregation mod (see module docstring). Non-labqfl messages pass through."""
    if CFG not in msg.content.config_records:
        return call_next(msg, context)
    cfg = msg.content.config_records[CFG]
    stage = str(cfg.get("stage", ""))
    spec = FlowerSpec.from_config(cfg)
    name = node_name(context, spec)
    r = _cfg_int(cfg, "round")
    n = _cfg_int(cfg, "n_params")
    run_tag = str(cfg["run_tag"])
    signed = _check_signed_spec(context, cfg, spec, name, r, run_tag, stage)  # deployment: operator's settings
    _check_key_mode(context, spec, name, r)
    _check_n_params(spec, name, r, n)
    _clear_stale_round_state(context, spec, name, r)
    if stage != "keys":
        _check_run_tag(context, name, r, run_tag, stage)

    if stage == "keys":
        return _keys_stage(msg, context, spec, name, r, n, run_tag, signed)
    if stage == "refs":
        return _refs_stage(msg, context, spec, name, r, run_tag)
    if stage == "mask":
        return _mask_stage(msg, context, call_next, spec, name, r, n, run_tag, signed)
    if stage == "reveal":
        return _reveal_stage(msg, context, spec, name, r, n, run_tag)
    if stage == "consistency":
        return _consistency_stage(msg, context, spec, name, r, run_tag, signed)
    if stage == "unmask":
        return _unmask(msg, context, spec, name, r, n, run_tag, signed)
    if stage in ("end", "abort"):
        return _end_stage(msg, context, spec, name, stage)
    raise SecureAggregationError(f"unknown labqfl stage {stage!r}")


def _check_signed_spec(context: Context, cfg: Any, spec: FlowerSpec, name: str, r: int, run_tag: str,
                       stage: str) -> Any:
    """Deployment (signing keys or a CA in the node config, :func:`_peer_verifier`): the message must
    carry the operator-signed spec (:mod:`labqfl.fl.flower.specsig`, field ``signed_spec``), signed by
    the network operator's certificate ``ctl`` of the network CA, not expired, and the message's own
    settings (``spec.*``: participants, graph, k, self-masks, threshold, min_survivors, DP ε/δ, rounds,
    task, q, key mode, ...) must be exactly the signed ones, its round within the signed rounds, and
    one run tag follows one signed spec (pinned in the node state at its first message), and each round of
    a signed spec is trained once on this node (:func:`~labqfl.fl.flower.specsig.claim_round`, recorded in
    its data folder at the keys stage: a second run of the same spec is refused; the mask stage records its
    one upload per round, :func:`_claim_mask`). Otherwise one :class:`SecureAggregationError` naming what
    departs, before anything is reserved, drawn or trained. Returns the verified
    :class:`~labqfl.fl.flower.specsig.SignedSpec`, or ``None`` on a node without a CA or keys: a simulation
    follows the spec of the server's messages (stated in its security line)."""
    from labqfl.fl.flower import identity
    from labqfl.fl.flower.specsig import OPERATOR, SIGNED_SPEC, claim_round, spec_departures

    verifier = _peer_verifier(context, name, r)
    if verifier is None:
        return None
    raw = str(cfg.get(SIGNED_SPEC, "") or "")
    if not raw:
        raise SecureAggregationError(
            f"round {r}: the server's {stage} message to {name} carries no spec signed by the network operator "
            f"({OPERATOR!r}); this node (network CA configured) follows only the operator's settings: refused")
    try:
        signed = _verified_spec(verifier, raw)
    except SecureAggregationError as exc:
        raise SecureAggregationError(f"round {r}: the operator-signed spec in the server's {stage} message to "
                                     f"{name} is refused: {exc}") from None
    if why := signed.validity_problem():
        raise SecureAggregationError(f"round {r}: the operator-signed spec {signed.spec_id} is {why}: refused")
    if (now := identity._now()) > signed.expires:
        raise SecureAggregationError(f"round {r}: the operator-signed spec {signed.spec_id} expired at "
                                     f"{signed.expires:%Y-%m-%d %H:%M:%S} UTC (now {now:%Y-%m-%d %H:%M:%S} UTC); "
                                     f"{name} follows no expired spec: refused")
    if bad := spec_departures(signed, spec):
        raise SecureAggregationError(
            f"round {r}: the server's {stage} message to {name} departs from the operator-signed spec "
            f"{signed.spec_id} (field: sent, signed): " + "; ".join(f"{k}: {a!r}, {b!r}" for k, (a, b) in bad.items())
            + ": refused")
    if stage == "setup":
        return signed
    first, last = spec.first_round, spec.last_round or spec.rounds  # signed: equal to the spec's (departures)
    if not first <= r <= last:  # a segment's spec authorises its own rounds only (review s35 third look T1)
        raise SecureAggregationError(f"round {r}: outside rounds {first}..{last} of the operator-signed spec "
                                     f"{signed.spec_id}: refused")
    st = context.state
    if STATE_SPEC in st and str(st.config_records[STATE_SPEC]["run"]) == run_tag \
            and (pinned := str(st.config_records[STATE_SPEC]["spec_id"])) != signed.spec_id:
        raise SecureAggregationError(f"round {r}: the {stage} message to {name} carries the operator-signed spec "
                                     f"{signed.spec_id}, but its run {run_tag!r} follows spec {pinned}: refused "
                                     "(one signed spec per run)")
    st[STATE_SPEC] = ConfigRecord({"run": run_tag, "spec_id": signed.spec_id})
    if stage == "keys":  # before anything of the round is reserved or drawn: each signed round once (specsig)
        claim_round(_spec_record(context, name), signed, r, run_tag)
    return signed


def _claim_mask(context: Context, signed: Any, name: str, r: int, run_tag: str) -> None:
    """Deployment: record in the node's own data folder that it masks its one upload of round ``r`` of the
    operator-signed spec, before any mask word is read (:func:`~labqfl.fl.flower.specsig.claim_mask`: a
    round masked already, or one below the highest masked, is refused whatever the run tag; review s35
    second look F2). ``signed`` is ``None`` on a node without a CA (a simulation: the server's word)."""
    from labqfl.fl.flower.specsig import claim_mask

    if signed is not None:
        try:
            claim_mask(_spec_record(context, name), signed, r, run_tag)
        except SecureAggregationError as exc:
            raise SecureAggregationError(f"{name}: {exc}") from None


def _spec_record(context: Context, name: str) -> Any:
    """This node's record of the signed rounds it trained (:func:`~labqfl.fl.flower.specsig.spec_record_path`)
    in its own data folder: node config ``labqfl-keystore`` (``labqfl node supernode``: ``--data``), else
    labqfl's data folder of this process (``$LABQFL_DATA_DIR``); never the server's ``spec.keystore_dir``."""
    from labqfl.fl.flower.specsig import spec_record_path
    from labqfl.keystore.store import default_data_dir

    data = str(context.node_config.get(NODE_KEYSTORE, "") or "") or str(default_data_dir())
    return spec_record_path(data, name)


@functools.lru_cache(maxsize=8)
def _verified_spec(verifier: Any, raw: str) -> Any:
    """The :class:`~labqfl.fl.flower.specsig.SignedSpec` of ``raw`` once its signature checked out
    (:meth:`~labqfl.fl.flower.identity.ReplyVerifier.verify_operator`; cached: every message of a run
    carries the same one). Raises :class:`SecureAggregationError` (or its ``ReplyRefused``)."""
    from labqfl.fl.flower.specsig import OPERATOR, SignedSpec, spec_signed_bytes

    signed = SignedSpec.from_json(raw)
    verifier.verify_operator(signed.cert_pem, signed.sig, spec_signed_bytes(signed.body), operator=OPERATOR)
    return signed


def _check_key_mode(context: Context, spec: FlowerSpec, name: str, r: int) -> None:
    """The key mode is the node's, not the message's (review s34 F3: a server that sends
    ``keys=csprng`` to a QKD node relays its own X25519 keys as every peer's and unmasks every
    upload). Node config ``labqfl-keys`` (qkd | csprng) names it; a node with a key store
    (``labqfl-keystore``: ``labqfl node supernode``) and no ``labqfl-keys`` is a ``qkd`` node. A
    message whose spec names another mode is refused before anything is reserved or drawn."""
    nc = context.node_config
    mode = str(nc.get(NODE_KEYS, "") or ("qkd" if nc.get(NODE_KEYSTORE) else ""))
    if mode not in ("", "qkd", "csprng"):
        raise SecureAggregationError(f"{name}: node config {NODE_KEYS!r} is {mode!r}; expected 'qkd' or 'csprng'")
    if mode and spec.keys != mode:
        why = f"node config {NODE_KEYS}={mode!r}" if NODE_KEYS in nc else f"it has a key store ({NODE_KEYSTORE!r})"
        raise SecureAggregationError(
            f"round {r}: the server's message asks {name} to mask with keys={spec.keys!r}, but this node uses "
            f"keys={mode!r} ({why}): refused (the key mode is the node operator's, not the server's; its "
            f"SuperNode's node config {NODE_KEYS}='{spec.keys}' would allow it)")


def _check_n_params(spec: FlowerSpec, name: str, r: int, n: int) -> None:
    """``n_params`` may not exceed the words per upload of the spec's model: its parameter count, or
    the DP plan's padded length d' (review s34 F7: a larger n at ``keys`` made a master reserve, and
    the next keys stage spend, q·n bits per pair, its whole pool). A smaller n reserves less and
    masks nothing: at ``mask`` the node's own update must have exactly n words
    (:func:`_encode_update`), so an upper bound suffices (and tests may mask short synthetic updates)."""
    want = spec.upload_words()
    if not 1 <= n <= want:
        raise SecureAggregationError(f"round {r}: the message gives {name} n_params={n}; the run's model "
                                     f"{spec.task!r} uploads {want} words (at most that many are reserved)")


def _check_run_tag(context: Context, name: str, r: int, run_tag: str, stage: str) -> None:
    """Every stage after ``keys`` must carry the run tag the node's keys stage of the round was made
    for (pinned in ``labqfl.resv``, or with ``csprng`` next to the X25519 secret). Review s34 F1: a
    server that changed the run tag got a second mask of the round with the same reserved pair words
    and recovered the update exactly."""
    st = context.state
    res = _reservations(context)
    pinned: str | None = None
    if res is not None and res["round"] == r:
        pinned = res["run"]
    elif STATE_SECRET in st and _cfg_int(st.config_records[STATE_SECRET], "round") == r:
        pinned = str(st.config_records[STATE_SECRET].get("run", ""))
    if pinned is not None and pinned != run_tag:
        raise SecureAggregationError(f"round {r}: the {stage} message to {name} carries run tag {run_tag!r}, but "
                                     f"its keys stage of this round was for run tag {pinned!r}: refused")


def _clear_stale_round_state(context: Context, spec: FlowerSpec, name: str, r: int) -> None:
    """Drop what an earlier round (e.g. an aborted one) left in the node state before round ``r``."""
    st = context.state
    if STATE_SECRET in st and _cfg_int(st.config_records[STATE_SECRET], "round") != r:
        _clear_secret(context)  # a previous round's leftovers (e.g. an aborted round)
    old = _reservations(context)
    if old is not None and old["round"] != r:
        # an unfinished earlier round: what was tagged or read is spent, the rest goes back (_keys_stage)
        _finish_reservations(context, spec, name, release_unread=True)
    if STATE_OWNSHARE + ".round" in st and _cfg_int(st.config_records[STATE_OWNSHARE + ".round"], "round") != r:
        _clear_selfmask_state(context)
    if STATE_NONCE in st and _cfg_int(st.config_records[STATE_NONCE], "round") != r:
        _clear_nonces(context)


def _keys_stage(msg: Message, context: Context, spec: FlowerSpec, name: str, r: int, n: int,
                run_tag: str, signed: Any = None) -> Message:
    """Keys stage: reserve the mask (and pad) key and the refs tag key of every pair this node
    masters, answer the references and a fresh nonce per pair it is the slave of (QKD), or answer
    a fresh ECDH public key (CSPRNG). A round this node pinned with dropped clients is refused here,
    before it reserves anything (:func:`_check_pin_at_keys`)."""
    cfg = msg.content.config_records[CFG]
    _clear_secret(context)
    _clear_selfmask_state(context)
    _clear_nonces(context)
    # the previous round's reservations: consumed if tagged or read (the slave may have masked with
    # them), released if never (no slave accepts untagged refs: the rule of abort with mask_sent
    # False, here from the node's own state; review s34 F7 — consuming them let two keys messages
    # burn the pool)
    _finish_reservations(context, spec, name, release_unread=True)
    pinned = _check_pin_at_keys(context, spec, name, r, signed) if spec.self_masks and signed is not None else None
    masters = _cfg_strs(cfg, "master_pairs")
    out = ConfigRecord()
    if spec.keys == "qkd":
        slaves = _cfg_strs(cfg, "slave_pairs")
        if bad := [p for p in slaves if split_pair(p)[1] != name]:
            raise SecureAggregationError(f"round {r}: {name} is not the slave of pair(s) {bad}")
        # the slave's fresh nonce per pair: the master's refs tag must cover it (no replay)
        nonces = {p: secrets.token_bytes(REFS_NONCE_BYTES).hex() for p in slaves}
        for p, v in nonces.items():
            out[f"nonce.{p}"] = v
        _save_nonces(context, r, nonces)
        kids, void = _reserve_master_keys(context, spec, name, r, n, run_tag, masters, out)
        _save_reservations(context, r, kids, [], void, run=run_tag, masked=[])  # the run tag pinned (F1)
    else:
        priv, pub = new_ecdh_key()
        context.state[STATE_SECRET] = ConfigRecord({"round": r, "run": run_tag, "sk": priv})
        out["pk"] = pub
        if (signer := _node_signer(context)) is not None:  # a deployment: its peers require the signature
            out["pksig"] = signer.sign_pk(run=run_tag, round_index=r, name=name, public_key=pub)
            out["pkcert"] = signer.cert_pem
    if pinned is not None:  # the survivor set this node signed for the round: the server keeps to it, or aborts
        out[PINNED] = json.dumps(pinned)
    return _reply(msg, labqfl=out)


def _reserve_master_keys(context: Context, spec: FlowerSpec, name: str, r: int, n: int, run_tag: str,
                         masters: list[str], out: ConfigRecord) -> tuple[dict[str, str], dict[str, Any]]:
    """For every pair in ``masters``: reserve the mask key (q·n bits), with self-masks the share
    pads (2·(q+1)·n) and the refs tag key (:data:`~labqfl.fl.flower.keys.REFS_TAG_BITS`, its own
    reservation so that the mask bits can still be released if the round ends before the refs
    stage), answering their refs and the void refs in ``out``. Returns (name → key ID, pair → void refs)."""
    q, w = spec.q, share_bits(spec.q)
    need = q * n + (2 * w * n if spec.self_masks else 0) + REFS_TAG_BITS  # the pair's bits this round
    kids: dict[str, str] = {}
    void: dict[str, Any] = {}
    with NodeKeyStore(name, _keystore_dir(context, spec), starvation_timeout_s=spec.wait_for_keys_s) as ks:
        ks.void_stranded(run_tag, r)  # what a killed round left reserved (never released: it may be in use)
        try:
            for p in masters:
                if spent := ks.spent_refs(p, r):
                    void[p] = spent
                    out[f"void.{p}"] = json.dumps(spent)  # the slave discards what it still holds free
                kid = _key_id(run_tag, r, p)
                out[f"refs.{p}"] = json.dumps(ks.reserve_master(p, q * n, kid, round_index=r, run_tag=run_tag,
                                                                wait_bits=need))
                kids[p] = kid
                if spec.self_masks:
                    kid = _key_id(run_tag, r, p + PAD)
                    out[f"refpad.{p}"] = json.dumps(ks.reserve_master(p, 2 * w * n, kid, round_index=r,
                                                                      run_tag=run_tag))
                    kids[p + PAD] = kid
                kid = _key_id(run_tag, r, p + TAG)
                out[f"reftag.{p}"] = json.dumps(ks.reserve_master(p, REFS_TAG_BITS, kid, round_index=r,
                                                                  run_tag=run_tag))
                kids[p + TAG] = kid
        except BaseException:
            for kid in kids.values():  # never read: back to the pool
                ks.finish(kid, release=True)
            raise
    return kids, void


def _refs_stage(msg: Message, context: Context, spec: FlowerSpec, name: str, r: int, run_tag: str) -> Message:
    """Refs stage (QKD): tag, for each pair asked, the refs this master holds together with the
    slave's nonce the server relays (:func:`~labqfl.fl.flower.keys.refs_statement`,
    :meth:`~labqfl.fl.flower.keys.NodeKeyStore.tag_refs`; Wegman & Carter 1981). The refs are
    taken from this node's store and state, never from the message. Each pair is tagged at most
    once per round (one tag per tag key: two tags under one pad would let the server forge), and
    its mask and pad reservations count as read from now on: tagged refs may reach the slave, so
    those bits are never released, only consumed. Both rules hold in the key store itself (the mask
    and pad reservations marked ``reserve-tagged`` before any tag key is read; a tag key read once is
    refused a second tag), so a node state lost after the reply changes neither."""
    cfg = msg.content.config_records[CFG]
    res = _reservations(context)
    want = _cfg_strs(cfg, "pairs")
    if spec.keys != "qkd" or res is None or res["round"] != r:
        raise SecureAggregationError(f"round {r}: refs stage at {name} without a qkd keys stage of this round")
    kids, read = res["kids"], list(res["read"])
    nonces: dict[str, bytes] = {}
    for p in want:
        if split_pair(p)[0] != name or p not in kids or p + TAG not in kids:
            raise SecureAggregationError(f"round {r}: {name} holds no reservation as master of pair {p}")
        if p + TAG in read or p in nonces:
            raise SecureAggregationError(f"round {r}: {name} refuses to tag the refs of pair {p} twice "
                                         "(one tag per tag key)")
        try:
            nonces[p] = bytes.fromhex(str(cfg[f"nonce.{p}"]))
        except (KeyError, ValueError):
            nonces[p] = b""
        if len(nonces[p]) != REFS_NONCE_BYTES:
            raise SecureAggregationError(f"round {r}: no {8 * REFS_NONCE_BYTES}-bit slave nonce for pair {p}")
    read += [x for p in want for x in (p, p + PAD, p + TAG) if x in kids and x not in read]
    out = ConfigRecord()
    signer = _node_signer(context)
    if signer is not None and want:
        out["refcert"] = signer.cert_pem  # the slave checks it chains to the network CA, CN = this node
    with NodeKeyStore(name, _keystore_dir(context, spec)) as ks:
        for p in want:
            if not ks.reserved_refs(kids[p]):
                raise SecureAggregationError(f"round {r}: {name}'s reservation for pair {p} is no longer pending in "
                                             "its key store: nothing to tag")
        # tagged, in the store, before any tag key is read (review s34 second look, F2): the node state
        # saved below reaches the SuperNode only after the reply, so a crash in between must not leave
        # tagged bits releasable at the next keys stage
        for x in (x for p in want for x in (p, p + PAD) if x in kids):
            ks.mark_tagged(kids[x])
        _save_reservations(context, r, kids, read, res["void"], run=res["run"],
                           masked=res["masked"])  # before any tag key is read
        for p in want:
            statement = refs_statement(run_tag, r, p, nonces[p], refs=ks.reserved_refs(kids[p]),
                                       tag_refs=ks.reserved_refs(kids[p + TAG]),
                                       pad_refs=ks.reserved_refs(kids[p + PAD]) if p + PAD in kids else [],
                                       void_refs=res["void"].get(p, []))
            out[f"tag.{p}"] = ks.tag_refs(kids[p + TAG], statement).hex()
            if signer is not None:  # the second, computational factor (deployment)
                out[f"refsig.{p}"] = signer.sign_refs(statement)
    return _reply(msg, labqfl=out)


def _node_signer(context: Context) -> Any:
    """This node's :class:`~labqfl.fl.flower.identity.ReplySigner` when it has signing keys
    (node config ``labqfl-cert``/``labqfl-key``: a deployment), else None (a simulation). It signs
    the refs of the pairs this node masters (qkd) or its X25519 public key of the round (csprng)."""
    from labqfl.fl.flower.identity import NODE_CERT, NODE_KEY, signer_from_files

    nc = context.node_config
    if NODE_CERT not in nc:
        return None
    return signer_from_files(str(nc[NODE_CERT]), str(nc.get(NODE_KEY, "")))


def _peer_verifier(context: Context, name: str, r: int) -> Any:
    """The check of its peers' signatures this node must apply (masters' refs with qkd keys, peers'
    X25519 public keys with csprng keys): a :class:`~labqfl.fl.flower.identity.ReplyVerifier` of the
    network CA (node config ``labqfl-ca``) when the node has signing keys or a CA configured (a
    deployment: the signature is then required), None without either (a simulation: qkd refs have
    the Wegman–Carter tag alone, csprng keys nothing — the server could substitute them)."""
    from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, verifier_from_file

    nc = context.node_config
    if NODE_CERT not in nc and NODE_CA not in nc:
        return None
    if not str(nc.get(NODE_CA, "")):
        raise SecureAggregationError(f"round {r}: {name} has a signing key ({NODE_CERT!r}) but no network CA "
                                     f"(node config {NODE_CA!r}) to check its peers' signatures (refs, X25519 keys): it masks "
                                     "nothing (start it with labqfl node supernode)")
    try:
        return verifier_from_file(str(nc[NODE_CA]))
    except LabqflError as exc:
        raise SecureAggregationError(f"round {r}: {name} cannot load its network CA: {exc}") from None


def _check_refs_signature(context: Context, cfg: Any, name: str, r: int, pair: str, statement: bytes) -> None:
    """Deployment (signing keys configured): the refs of ``pair`` must come with its master's
    signature over ``statement`` (this node's nonce, the refs as received) under a node certificate
    of the network CA whose CN is the master (:meth:`~labqfl.fl.flower.identity.ReplyVerifier.verify_refs`);
    a missing one is refused too (else the server would just strip it). Checked before any bit of
    the pair is reserved or read. A simulation without node keys has only the Wegman–Carter tag."""
    from labqfl.fl.flower.identity import ReplyRefused

    verifier = _peer_verifier(context, name, r)
    if verifier is None:
        return
    master = split_pair(pair)[0]
    try:
        verifier.verify_refs(cfg.get(f"refcert.{pair}", ""), cfg.get(f"refsig.{pair}"), statement, master=master)
    except ReplyRefused as exc:
        raise SecureAggregationError(f"round {r}: key references for pair {pair} not signed by its master {master}: "
                                     f"{exc}; {name} masks nothing with them") from None


def _peer_public_keys(context: Context, cfg: Any, name: str, r: int, run_tag: str,
                      peers: Any) -> dict[str, bytes]:
    """csprng keys: the X25519 public key of each peer in ``peers`` as the server relayed it
    (``pk.<peer>``), checked before anything is derived from it. Where the node has signing keys or
    a CA configured (a deployment, :func:`_peer_verifier`) the key must come with the peer's
    signature over it, this run and this round (``pksig.<peer>``) under a node certificate of the
    network CA whose CN is the peer (``pkcert.<peer>``,
    :meth:`~labqfl.fl.flower.identity.ReplyVerifier.verify_pk`): a key the server substituted (a man
    in the middle), one signed by another node or CA, one replayed from another round or run, or one
    with no signature is refused with one reason. A simulation without node keys takes the relayed
    key as it comes (an honest-but-curious server; docs/secure_aggregation.md §9)."""
    from labqfl.fl.flower.identity import X25519_PUBLIC_BYTES, ReplyRefused

    verifier = _peer_verifier(context, name, r)
    out: dict[str, bytes] = {}
    for peer in sorted(set(peers)):
        raw = cfg.get(f"pk.{peer}")
        if not isinstance(raw, bytes) or len(raw) != X25519_PUBLIC_BYTES:
            raise SecureAggregationError(f"round {r}: the message to {name} holds no {X25519_PUBLIC_BYTES}-byte "
                                         f"X25519 public key of {peer} (pk.{peer}); it derives no mask")
        if verifier is not None:
            try:
                verifier.verify_pk(cfg.get(f"pkcert.{peer}", ""), cfg.get(f"pksig.{peer}"), run=run_tag,
                                   round_index=r, peer=peer, public_key=raw)
            except ReplyRefused as exc:
                raise SecureAggregationError(f"round {r}: the X25519 public key of {peer} relayed to {name} is not "
                                             f"signed by {peer}: {exc}; {name} derives nothing from it") from None
        out[peer] = raw
    return out


def _mask_once(context: Context, name: str, r: int, run_tag: str) -> None:
    """One mask message per round: a second one (a malicious server's, with another participant set) would
    mask another upload with the same pair keys — the server subtracts the two and recovers the update (review
    s32: a 3-client round gave C1's quantised update exactly). Marked in the node state before any key word is
    read; a round whose mask stage failed before answering sent no upload, so nothing was masked twice."""
    st = context.state
    if STATE_MASKED in st:
        done = st.config_records[STATE_MASKED]
        if _cfg_int(done, "round") == r and str(done.get("run", "")) == run_tag:
            raise SecureAggregationError(f"round {r}: {name} was asked to mask a second upload in this round; "
                                         "refused (its pair keys mask one upload per round)")
    st[STATE_MASKED] = ConfigRecord({"round": r, "run": run_tag})


def _mask_stage(msg: Message, context: Context, call_next: Any, spec: FlowerSpec, name: str, r: int, n: int,
                run_tag: str, signed: Any = None) -> Message:
    """Mask stage: train, encode the update to integers, add the pairwise masks (and the self-mask
    with its encrypted shares) and answer the masked upload; key words are wiped before returning."""
    cfg = msg.content.config_records[CFG]
    q, st = spec.q, context.state
    res = _reservations(context)
    if (spec.keys == "qkd" and res is None) or (spec.keys == "csprng" and STATE_SECRET not in st):
        raise SecureAggregationError(f"round {r}: mask stage at {name} without a keys stage")
    pairs, participants, t = _checked_mask_plan(cfg, spec, name, r)
    # csprng: every partner's public key checked (deployment: its signature) before training or any mask
    pks = _peer_public_keys(context, cfg, name, r, run_tag, (_peer(name, p) for p in pairs)) \
        if spec.keys == "csprng" else {}
    if signed is not None:  # deployment: the levels follow from the signed spec, not the server's word
        _check_levels(cfg, spec, name, r, participants)
    if spec.self_masks and signed is not None:  # a pinned round that cannot complete spends no key
        _check_pin_at_mask(context, spec, name, r, participants, signed)
    _mask_once(context, name, r, run_tag)
    _claim_mask(context, signed, name, r, run_tag)  # persistent: one upload per round of a signed spec
    if spec.self_masks:  # the consistency and unmask stages check the survivor set against these
        st[STATE_PLAN] = ConfigRecord({"round": r, "run": run_tag, "participants": json.dumps(participants), "t": t})
    # 1. the training function returns the float update
    res_msg = call_next(msg, context)
    if res_msg.has_error():
        return res_msg
    metrics = res_msg.content.metric_records.get("metrics", MetricRecord())
    v, n_clipped = _encode_update(res_msg, cfg, spec, name, r, n)
    # 3. pair words, read here and wiped before this call returns
    words: dict[str, np.ndarray] = {}
    pads: dict[str, np.ndarray] = {}  # self-masks: pad of the share this node sends over each pair
    try:
        if spec.keys == "qkd":
            assert res is not None
            _read_qkd_pair_words(context, cfg, spec, name, r, n, run_tag, res, pairs, words, pads)
        else:
            sk = bytes(st.config_records[STATE_SECRET]["sk"])  # type: ignore[arg-type]
            for p in pairs:
                a, b = split_pair(p)
                peer = b if a == name else a
                words[p] = ecdh_words(sk, pks[peer], p, n, q, round_index=r, run_tag=run_tag)
                if spec.self_masks:
                    pads[p] = ecdh_pad_words(sk, pks[peer], p, n, share_bits(q), 0 if a == name else 1,
                                             round_index=r, run_tag=run_tag)
        if not words:  # never reached after _checked_mask_plan; the last line before an unmasked upload
            raise SecureAggregationError(f"round {r}: {name} holds no pair words to mask with; nothing uploaded")
        y = mask_update(name, v, words, q)
        cts = ArrayRecord()
        if spec.self_masks:
            cts = _self_mask(name, y, pairs, participants, t, pads, cfg, st, r, q)
    finally:
        for arr in (*words.values(), *pads.values()):
            arr[:] = 0
        words.clear()
        pads.clear()
    if int(context.node_config.get(NODE_DROP_ROUND, -1)) == r:
        log.warning("%s: crashing after masking round %d (test hook %s)", name, r, NODE_DROP_ROUND)
        os._exit(17)
    metrics["clipped_values"] = int(n_clipped)
    if spec.self_masks:
        return _reply(msg, masked=ArrayRecord({"masked": Array(y)}), shares=cts, metrics=metrics)
    return _reply(msg, masked=ArrayRecord({"masked": Array(y)}), metrics=metrics)


def _checked_mask_plan(cfg: Any, spec: FlowerSpec, name: str, r: int) -> tuple[list[str], list[str], int]:
    """The mask message's pairs, participants and (with self-masks) Shamir threshold, checked against
    the run's spec before this node masks anything.

    The server only chooses *who* takes part (the clients that answered the keys stage); everything
    else follows from the spec (in a deployment the operator-signed one, :func:`_check_signed_spec`;
    in a simulation the server's, review s34; so the node adds floors no message can lower: ≥ 2
    participants and ≥ 1 pair for this node): its pairs are its edges of the spec's
    mask graph among the participants, the participants must be enough for a round
    (``SecAggConfig.survivors_needed``) and connected in that graph, and the threshold is the spec's
    (or the default rule's for those participants). Without these checks a server could send no
    pairs (the upload would go out unmasked) or a threshold of 1 with the node as its only holder (its
    self-mask would then be given away by the node's own share)."""
    pairs, participants = _cfg_strs(cfg, "pairs"), _cfg_strs(cfg, "participants")
    ordered = [c for c in spec.names if c in set(participants)]
    if name not in participants or participants != ordered:
        raise SecureAggregationError(
            f"round {r}: the mask message's participants {participants} are not clients of this run in loop "
            f"order including {name} (expected a subsequence of {spec.names})")
    if len(participants) < MIN_PARTICIPANTS:  # a floor of the node's, whatever the message's spec says
        raise SecureAggregationError(f"round {r}: the mask message names {len(participants)} participant(s), at "
                                     f"least {MIN_PARTICIPANTS} needed (an aggregate of one client is its update)")
    sa = spec.secagg()
    if (short := sa.too_few_survivors(len(participants))) is not None:
        raise SecureAggregationError(f"round {r}: the mask message names {len(participants)} participant(s), {short}")
    among = _graph_pairs(tuple(spec.names), sa.graph, sa.k, tuple(participants))
    if len(components(participants, among)) > 1:
        raise SecureAggregationError(f"round {r}: the mask message's participants {participants} are not "
                                     "connected in the mask graph")
    mine = [p for p in among if name in split_pair(p)]
    if pairs != mine:
        raise SecureAggregationError(f"round {r}: the mask message gives {name} the pairs {pairs}; the mask "
                                     f"graph among the round's participants gives {mine}")
    if not pairs:  # a floor of the node's: never an upload without a pair mask
        raise SecureAggregationError(f"round {r}: the mask message gives {name} no pair to mask with; refused "
                                     "(its upload would go out unmasked)")
    if not spec.self_masks:
        return pairs, participants, 0
    t = _cfg_int(cfg, "threshold")
    expected = sa.threshold if sa.threshold is not None else default_threshold(participants, among)
    if t != expected:
        raise SecureAggregationError(f"round {r}: the mask message's self-mask threshold is {t}; this run's "
                                     f"rule gives {expected} for the round's participants")
    check_threshold(participants, among, t, spec.q)
    return pairs, participants, t


def _check_levels(cfg: Any, spec: FlowerSpec, name: str, r: int, participants: list[str]) -> None:
    """Deployment, no DP: the mask message's quantisation ``levels`` for this node must be the weighted-FedAvg
    levels M_i of the round's participants (:meth:`~labqfl.fl.secure.SecAggConfig.quantization`, the rule
    the honest server uses, docs/secure_aggregation.md §2) from their sample counts, which every node
    computes itself from the operator-signed spec: the task data's deterministic partition
    (:meth:`~labqfl.fl.flower.spec.FlowerSpec.client_data`, the count each node reports at setup).

    Review s35 second look F1: the server chose each client's levels, and levels 0 for C2 and C3 made
    the honestly unmasked sum C1's quantised update exactly. Each honest node refusing any levels but its
    own fair value defeats that; a server colluding with all the other participants learns the victim's
    update from the sum anyway (secure aggregation's limit). With DP the plan's equal weights replace the
    levels (:func:`_encode_update`), so nothing is checked."""
    counts = {c: len(spec.client_data(c)[1]) for c in participants}
    plan = spec.secagg().quantization({c: float(n) for c, n in counts.items()})
    if plan is None:
        return
    got, want = _cfg_int(cfg, "levels"), int(plan["levels"][name])
    if got != want:
        raise SecureAggregationError(
            f"round {r}: the mask message gives {name} quantisation levels {got}; the weighted-FedAvg rule over the "
            f"round's participants {participants} (sample counts {list(counts.values())} "
            f"from the operator-signed spec's data partition) gives {want}: refused (the server does not choose "
            "a client's share of the sum's range)")


@functools.lru_cache(maxsize=8)
def _graph_pairs(names: tuple[str, ...], graph: str, k: int, participants: tuple[str, ...]) -> tuple[str, ...]:
    """The pairs of the run's mask graph over ``names`` with both ends among ``participants``
    (cached: every round of a run without dropouts asks the same)."""
    part = set(participants)
    return tuple(p for p in mask_graph(list(names), graph, k) if all(x in part for x in split_pair(p)))


def _encode_update(res_msg: Message, cfg: Any, spec: FlowerSpec, name: str, r: int,
                   n: int) -> tuple[np.ndarray, int]:
    """Encode the trained float update to integers mod 2^q: quantise on this node's range, or with
    DP clip, rotate, round and add noise. Returns (integer vector, clipped-value count)."""
    q = spec.q
    update = as_float64(res_msg.content.array_records["update"]["update"].numpy())
    plan = _dp_plan_of(cfg, spec, n)
    n_model = plan.n_params if plan is not None else n  # with DP an upload has d' ≥ P words
    if update.size != n_model:
        raise SecureAggregationError(f"update of {name} has {update.size} parameters, expected {n_model}")
    if plan is not None:
        # 2'. distributed DP: clip, rotate, round and add this node's discrete Gaussian noise
        # in the integer domain, before any mask (rounding and noise from the node's own
        # OS-seeded generators; neither is seen by anyone)
        v, was_clipped = dp_encode(update, plan, round_index=r, rng=noise_rng(), noise=noise_rng())
        n_clipped = int(was_clipped)
    else:
        # 2. clip and quantise on this node's range (stochastic rounding: the in-process stream)
        rng = stochastic_rng(spec.seed, r, _cfg_int(cfg, "position"), n) if spec.rounding == "stochastic" else None
        v, n_clipped = quantize(update, clip=spec.clip, levels=_cfg_int(cfg, "levels"), q=q,
                                rounding=spec.rounding, rng=rng)  # type: ignore[arg-type]
    del update
    return v, n_clipped


def _read_qkd_pair_words(context: Context, cfg: Any, spec: FlowerSpec, name: str, r: int, n: int, run_tag: str,
                         res: dict[str, Any], pairs: list[str], words: dict[str, np.ndarray],
                         pads: dict[str, np.ndarray]) -> None:
    """QKD keys: authenticate every slave pair's refs (:func:`_check_refs_tag`), reserve the slave
    ends, then read each pair's mask words (and share pad) into ``words``/``pads`` — filled in
    place, so that the caller wipes whatever was read on any error."""
    q, w = spec.q, share_bits(spec.q)
    if again := [p for p in pairs if p in res["masked"] or p + PAD in res["masked"]]:
        # review s34 F1: a second mask read of one reservation is a two-time pad (pair key or share pad)
        raise SecureAggregationError(f"round {r}: {name} already masked an upload with the keys of pair(s) {again} "
                                     "in this round; refused (a pair key masks one upload, a share pad one share)")
    keep = tuple(x for p in pairs for x in (p, p + PAD, p + TAG))
    # pairs this node masters that left the round before masking: released if their refs were never
    # tagged (the slave cannot have them), consumed otherwise
    _finish_reservations(context, spec, name, release_unread=True, keep=keep)
    kids = {p: k for p, k in res["kids"].items() if p in keep}
    read = [x for x in res["read"] if x in kids]
    masked = [x for x in res["masked"] if x in kids]
    with NodeKeyStore(name, _keystore_dir(context, spec)) as ks:
        for p in pairs:  # every slave pair is authenticated before any mask bit is reserved
            if pair_sign(name, p) < 0:
                _check_refs_tag(context, cfg, spec, ks, name, r, run_tag, p, kids, read, masked)
        for p in pairs:
            if pair_sign(name, p) > 0:
                if p not in kids:
                    raise SecureAggregationError(f"round {r}: {name} holds no reservation for pair {p}")
            else:
                if f"void.{p}" in cfg:
                    ks.discard(p, json.loads(str(cfg[f"void.{p}"])))
                kids[p] = _key_id(run_tag, r, p)
                ks.reserve_slave(p, json.loads(str(cfg[f"refs.{p}"])), q * n, kids[p], round_index=r, run_tag=run_tag)
            if spec.self_masks and pair_sign(name, p) < 0:
                kids[p + PAD] = _key_id(run_tag, r, p + PAD)
                ks.reserve_slave(p, json.loads(str(cfg[f"refpad.{p}"])), 2 * w * n, kids[p + PAD],
                                 round_index=r, run_tag=run_tag)
            elif spec.self_masks and p + PAD not in kids:
                raise SecureAggregationError(f"round {r}: {name} holds no pad reservation for pair {p}")
            read.extend((p, p + PAD))
            masked.extend((p, p + PAD))
            _save_reservations(context, r, kids, read, run=run_tag, masked=masked)  # before any bit is read
            # for_mask: the store refuses a second mask read of the reservation even if this state is lost
            words[p] = ks.words(kids[p], n, q, for_mask=True)
            if spec.self_masks:
                pads[p] = ks.pad_words(kids[p + PAD], n, w, 0 if pair_sign(name, p) > 0 else 1, for_mask=True)


def _check_refs_tag(context: Context, cfg: Any, spec: FlowerSpec, ks: NodeKeyStore, name: str, r: int,
                    run_tag: str, pair: str, kids: dict[str, str], read: list[str], masked: list[str]) -> None:
    """Slave end of ``pair``: check that the refs relayed by the server are its master's, made for
    this node's nonce of this round, before any of them is used (Wegman & Carter 1981, as
    :mod:`labqfl.qkd.authentication`). Pops the nonce (used at most once; missing: refused),
    reserves the tag key the master names (``reftag``) and reads it, and compares the master's
    ``tag`` with the tag of :func:`~labqfl.fl.flower.keys.refs_statement` over its own nonce and
    the refs as received. A mismatch raises :class:`SecureAggregationError`; the tag key is then
    spent (read, consumed at the round's end) and nothing else of the pair was touched. A forged
    or altered statement passes with probability ≤ (L/2^64)^2
    (:func:`~labqfl.fl.flower.keys.refs_forgery_probability`); a replayed one was made for
    another nonce. That bound fails once the server knows the tag key (bits revealed after a
    dropout lie, docs/secure_aggregation.md §9): with signing keys configured the master's
    signature is checked first (:func:`_check_refs_signature`), before any bit is reserved."""
    master = split_pair(pair)[0]
    nonce = _pop_nonce(context, r, pair)
    if nonce is None:
        raise SecureAggregationError(f"round {r}: {name} holds no nonce of this round for pair {pair} (never drawn "
                                     "or already used): its key references are refused")
    try:
        tag_refs = json.loads(str(cfg[f"reftag.{pair}"]))
        statement = refs_statement(
            run_tag, r, pair, nonce, refs=json.loads(str(cfg[f"refs.{pair}"])), tag_refs=tag_refs,
            pad_refs=json.loads(str(cfg[f"refpad.{pair}"])) if spec.self_masks else [],
            void_refs=json.loads(str(cfg[f"void.{pair}"])) if f"void.{pair}" in cfg else [])
        tag = bytes.fromhex(str(cfg[f"tag.{pair}"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise SecureAggregationError(f"round {r}: malformed or missing key references for pair {pair} "
                                     f"({type(exc).__name__}: {exc}): refused") from None
    _check_refs_signature(context, cfg, name, r, pair, statement)  # before any bit is touched
    kid = _key_id(run_tag, r, pair + TAG)
    try:
        ks.reserve_slave(pair, tag_refs, REFS_TAG_BITS, kid, round_index=r, run_tag=run_tag)
    except LabqflError as exc:
        raise SecureAggregationError(f"round {r}: the refs tag key named for pair {pair} cannot be reserved in "
                                     f"{name}'s store ({exc}): its key references are refused") from None
    kids[pair + TAG] = kid
    read.append(pair + TAG)
    _save_reservations(context, r, kids, read, run=run_tag, masked=masked)  # before the tag key is read
    if not ks.refs_tag_matches(kids[pair + TAG], statement, tag):
        raise SecureAggregationError(
            f"round {r}: key references for pair {pair} not authenticated by its master {master}: altered, "
            f"forged or replayed by the server; {name} masks nothing with them")


def _reveal_stage(msg: Message, context: Context, spec: FlowerSpec, name: str, r: int, n: int,
                  run_tag: str) -> Message:
    """Reveal stage (no self-masks): answer the mask words of pairs shared with a dropped partner,
    and only those; the revealed key is spent."""
    cfg = msg.content.config_records[CFG]
    q = spec.q
    dropped = set(_cfg_strs(cfg, "dropped"))
    _check_dp_dropouts(spec, name, r, "reveal", sorted(dropped), None)
    want = _cfg_strs(cfg, "pairs")
    out_rec = ArrayRecord()
    for p in want:
        a, b = split_pair(p)
        if name not in (a, b) or (b if a == name else a) not in dropped or name in dropped:
            raise SecureAggregationError(
                f"round {r}: {name} refuses to reveal pair {p}: only keys shared with a dropped partner are revealed")
    if spec.keys == "qkd":
        res = _reservations(context)
        kids = res["kids"] if res is not None else {}
        missing = [p for p in want if p not in kids]
        if missing:
            raise SecureAggregationError(f"round {r}: {name} holds no reservation for pair(s) {missing}")
        with NodeKeyStore(name, _keystore_dir(context, spec)) as ks:
            for p in want:
                # consumed now: a revealed key is spent either way
                out_rec[p] = Array(ks.take_words(kids[p], n, q))
        _finish_reservations(context, spec, name)
    else:
        pks = _peer_public_keys(context, cfg, name, r, run_tag, (_peer(name, p) for p in want))
        sk = bytes(context.state.config_records[STATE_SECRET]["sk"])  # type: ignore[arg-type]
        for p in want:
            out_rec[p] = Array(ecdh_words(sk, pks[_peer(name, p)], p, n, q, round_index=r, run_tag=run_tag))
        _clear_secret(context)
    return _reply(msg, revealed=out_rec)


def _check_dp_dropouts(spec: FlowerSpec, name: str, r: int, stage: str, dropped: list[str],
                       survivors: list[str] | None) -> None:
    """DP with H > 1 honest clients: the noise is sized for H honest noises in the sum, so no DP round can
    lose a client (:meth:`~labqfl.fl.secure.SecAggConfig.too_few_survivors`). The mask stage checks the
    participants; here a reveal or unmask message that names any dropped client, or fewer survivors than the
    plan's clients, is refused before anything is revealed (review s35 second look F3: a server that claimed
    a dropout after masking got the others' unmask answers, and a sum carrying H − 1 honest noises). With
    H = 1 (each client's own noise) or no DP nothing changes."""
    sa = spec.secagg()
    if sa.dp is None or sa.dp.honest <= 1:
        return
    n = spec.clients - len(set(dropped))
    if survivors is not None:
        n = min(n, len(set(survivors)))
    if (short := sa.too_few_survivors(n)) is not None:
        raise SecureAggregationError(
            f"round {r}: the {stage} message to {name} names dropped client(s) {sorted(set(dropped))} "
            f"({n} of {spec.clients} surviving) under a DP plan with H = {sa.dp.honest}: {short}; {name} "
            "reveals nothing: refused")


def _end_stage(msg: Message, context: Context, spec: FlowerSpec, name: str, stage: str) -> Message:
    """End or abort stage: finish this round's reservations and wipe its secrets."""
    cfg = msg.content.config_records[CFG]
    # end: the round is complete, every reservation is spent. abort: the server gave up the
    # round; "mask_sent" False means no partner ever received refs, so unread bits go back.
    release = stage == "abort" and not bool(cfg.get("mask_sent", True))
    _finish_reservations(context, spec, name, release_unread=release)
    _clear_secret(context)
    _clear_selfmask_state(context)
    _clear_nonces(context)
    return _reply(msg, labqfl=ConfigRecord({"ok": True}))


def _dp_plan_of(cfg: Any, spec: FlowerSpec, n: int) -> DPPlan | None:
    """The DP plan the server sent with the mask stage (``dp_plan``, JSON), or None without DP.

    Refused (review s34 F5: σ, or DP at all, was the server's choice): no plan while the spec has
    DP on (``dp_epsilon`` > 0), a plan while it has DP off, and a plan that differs in any field
    (σ, γ, d', Δ₂, …) from :meth:`~labqfl.fl.flower.spec.FlowerSpec.dp_plan`, which this node
    computes itself, or whose padded length is not the stage's. The spec those checks use is, in a
    deployment, the operator-signed one (:func:`_check_signed_spec`: DP ε/δ, DP on or off, rounds);
    in a simulation without node keys it is the server's."""
    raw = cfg.get("dp_plan", "")
    want = spec.dp_plan()
    if not raw:
        if want is not None:
            raise SecureAggregationError(f"the mask message has no DP plan, but the run has DP on "
                                         f"(dp_epsilon={spec.dp_epsilon}): refused (no upload without its noise)")
        return None
    try:
        plan = DPPlan.from_dict(json.loads(str(raw)))
    except (ValueError, TypeError) as exc:
        raise SecureAggregationError(f"malformed DP plan in the mask message: {exc}") from None
    if want is None:
        raise SecureAggregationError("the mask message carries a DP plan, but the run has DP off (dp_epsilon=0)")
    if plan != want:
        bad = {k: (v, want.as_dict()[k]) for k, v in plan.as_dict().items() if v != want.as_dict()[k]}
        raise SecureAggregationError("the mask message's DP plan differs from the run's (field: sent, expected): "
                                     + ", ".join(f"{k}: {a!r}, {b!r}" for k, (a, b) in bad.items()))
    if plan.q != spec.q or plan.d_pad != n:
        raise SecureAggregationError(
            f"DP plan for q={plan.q} and {plan.d_pad} words, but the round uses q={spec.q} and {n} words")
    return plan


def _self_mask(name: str, y: np.ndarray, pairs: list[str], participants: list[str], t: int,
               pads: dict[str, np.ndarray], cfg: Any, st: Any, r: int, q: int) -> ArrayRecord:
    """Add this node's self-mask to ``y`` (in place); return its partners' shares under one-time
    pads (``ArrayRecord`` holder → ciphertext); keep its own share in the node state. ``participants``
    and ``t`` are the round's, checked by :func:`_checked_mask_plan`."""
    pos = {c: i + 1 for i, c in enumerate(participants)}
    hs = holders_of(name, participants, pairs)
    s_i = draw_self_mask(y.size, q)
    shares = shamir_share(s_i, [pos[h] for h in hs], t, q)
    y += s_i
    s_i[:] = 0
    by_peer = {_peer(name, p): p for p in pairs}
    cts = ArrayRecord()
    try:
        for row, h in enumerate(hs):
            if h == name:
                st[STATE_OWNSHARE] = ArrayRecord({"share": Array(shares[row].copy())})
                st[STATE_OWNSHARE + ".round"] = ConfigRecord({"round": r})
            else:
                cts[h] = Array(encrypt_share(shares[row], pads[by_peer[h]]))
    finally:
        shares[:] = 0
    return cts


def _round_plan(context: Context, name: str, r: int, run_tag: str, stage: str) -> tuple[list[str], int]:
    """(participants, threshold) this node's mask stage of round ``r`` checked and kept (:data:`STATE_PLAN`);
    refused when it holds none for this round and run tag (it masked nothing in it)."""
    st = context.state
    if STATE_PLAN in st:
        rec = st.config_records[STATE_PLAN]
        if _cfg_int(rec, "round") == r and str(rec.get("run", "")) == run_tag:
            return [str(x) for x in json.loads(str(rec["participants"]))], _cfg_int(rec, "t")
    raise SecureAggregationError(f"round {r}: {stage} message to {name}, which holds no mask stage of this round "
                                 "(participants, threshold) under this run tag: refused")


def _consistency_ctx(context: Context, spec: FlowerSpec, name: str, signed: Any) -> tuple[str, Any]:
    """(job ID, this node's record of the survivor sets it signed): the signed spec's ``job_id``, else the one
    its settings give (:meth:`~labqfl.fl.flower.spec.FlowerSpec.derived_job_id`); the record beside :func:`_spec_record`'s (:func:`~labqfl.fl.flower.specsig.pin_survivors`)."""
    from labqfl.fl.flower.specsig import CONSISTENCY_RECORD

    return spec.job(), _spec_record(context, name).with_name(CONSISTENCY_RECORD)


def _check_pin_at_mask(context: Context, spec: FlowerSpec, name: str, r: int, participants: list[str],
                       signed: Any) -> None:
    """Mask stage, self-masks under a signed spec (review s36 F3): if this node signed a survivor set for
    round ``r`` of this job already (:func:`~labqfl.fl.flower.specsig.pinned_survivors`), the round can only
    be unmasked over that same (S, D), so this round's participants must be exactly S ∪ D (the consistency
    stage checks S ∪ D against them and the pin against (S, D)). Otherwise the round is refused here, before
    any key word is read or any update is trained, instead of after the mask stage spent its key."""
    from labqfl.fl.flower.specsig import pinned_survivors

    job, path = _consistency_ctx(context, spec, name, signed)
    pinned = pinned_survivors(path, job, r)
    if pinned is None or (set(pinned[0]) == set(participants) and not pinned[1]):
        return
    # a pin with dropped clients D ≠ ∅ (review s37 F4): this round can only be unmasked if every client of D is
    # lost again after masking; an honest server that gets their uploads this time asks to sign S ∪ D with none
    # dropped, which the consistency stage must refuse, after the round's key is spent. So such a round is
    # refused here too (only a client of D that fails again would have let it finish); since session 38 already
    # at the keys stage (_check_pin_at_keys), so this is reached by a pin with D = ∅ and other participants
    raise SecureAggregationError(_pin_refusal(job, name, r, pinned, path, f"this round's participants are "
                                              f"{sorted(participants)}"))


def _check_pin_at_keys(context: Context, spec: FlowerSpec, name: str, r: int, signed: Any) -> list[str] | None:
    """Keys stage, self-masks under a signed spec: a round ``r`` of this job that this node pinned with dropped
    clients (S, D ≠ ∅) can never be unmasked again (:func:`_check_pin_at_mask`), whatever the participants. Refused
    at the round's first message, before this node reserves any key, so that the round is aborted before masking
    and no client masks — also not a returning client of D, which holds no pin (review s37 F4's remainder: it
    masked, spending its pads, before the pinned nodes refused at the mask stage). A pin (S, ∅) is returned: the
    keys reply names S (:data:`PINNED`), so that the server keeps the round's participants to S — leaving out
    before masking a client that was not in it — or aborts before masking when S cannot be formed."""
    from labqfl.fl.flower.specsig import pinned_survivors

    job, path = _consistency_ctx(context, spec, name, signed)
    pinned = pinned_survivors(path, job, r)
    if pinned is not None and pinned[1]:
        raise SecureAggregationError(_pin_refusal(job, name, r, pinned, path, "this round is being trained again"))
    return None if pinned is None else sorted(pinned[0])


def _pin_refusal(job: str, name: str, r: int, pinned: tuple[list[str], list[str]], path: Any, now: str) -> str:
    """The one line of a node refusing a round it pinned with another survivor story, with the way on."""
    back = f"; the client(s) it dropped, {pinned[1]}, cannot be in its aggregate" if pinned[1] else ""
    return (
        f"round {r} of job {job!r}: {name} already signed survivors {pinned[0]}, dropped {pinned[1]} for this round "
        f"(its record {path}), and {now}: the round can be unmasked "
        f"over that set only{back}, so {name} masks nothing and reads no key: refused. To go on, train under a new "
        "job ID with a new seed (`labqfl run`: a new run with another --seed; `labqfl node train`: --job-id and "
        "--seed); a new job ID alone lets a server that unmasks this round in both jobs over different sets "
        "difference the sums (with the same settings and parameters the updates are the same): only with a new "
        "seed are they not" + ("" if pinned[1] else "; or bring back the clients of that set"))


def _consistency_stage(msg: Message, context: Context, spec: FlowerSpec, name: str, r: int, run_tag: str,
                       signed: Any) -> Message:
    """Stage ``consistency`` (self-masks, a deployment; Bonawitz et al., CCS 2017, round 3 *ConsistencyCheck*):
    the server names the round's survivors S and dropped D. The node checks S ∩ D = ∅, S ∪ D = the participants
    of its own mask stage, itself ∈ S, |S| ≥ need (:func:`~labqfl.fl.selfmask.consistency_need`), records (S, D)
    for (job, round) in its own data folder (:func:`~labqfl.fl.flower.specsig.pin_survivors`: never a second,
    different pair) and only then answers its certificate key's signature over them
    (:func:`~labqfl.fl.flower.identity.consistency_signed_bytes`) and its certificate."""
    from labqfl.fl.flower.specsig import pin_survivors

    cfg = msg.content.config_records[CFG]
    signer = _node_signer(context)
    if signed is None or signer is None or not spec.self_masks:
        raise SecureAggregationError(f"round {r}: consistency stage at {name}, which has no signing key and network "
                                     "CA (a simulation) or runs without self-masks: nothing to sign")
    participants, t = _round_plan(context, name, r, run_tag, "consistency")
    surv, dropped = _cfg_strs(cfg, "survivors"), _cfg_strs(cfg, "dropped")
    need = spec.consistency_need(t)
    why = ("a name repeats" if len(set(surv)) != len(surv) or len(set(dropped)) != len(dropped)
           else "a client is in both" if set(surv) & set(dropped)
           else f"together they are not this round's participants {participants}"
           if set(surv) | set(dropped) != set(participants)
           else f"{name} is not a survivor" if name not in surv
           else f"{len(surv)} survivor(s), at least {need} needed ({CONSISTENCY_NEED_RULE}, "
                f"c = {spec.tolerated_colluders()} colluders tolerated)"
           if len(surv) < need else "")
    if why:
        raise SecureAggregationError(f"round {r}: the consistency message to {name} names survivors {surv} and "
                                     f"dropped {dropped}: {why}; {name} signs nothing: refused")
    _check_dp_dropouts(spec, name, r, "consistency", dropped, surv)
    job, path = _consistency_ctx(context, spec, name, signed)
    try:
        pin_survivors(path, job, r, surv, dropped)  # persistent, before the signature leaves the node
    except SecureAggregationError as exc:
        raise SecureAggregationError(f"{name}: {exc}") from None
    sig = signer.sign_consistency(run=run_tag, spec_id=signed.spec_id, job=job, round_index=r, survivors=surv,
                                  dropped=dropped, name=name)
    return _reply(msg, labqfl=ConfigRecord({"conssig": sig, "conscert": signer.cert_pem}))


def _check_consistency(context: Context, cfg: Any, spec: FlowerSpec, name: str, r: int, run_tag: str, signed: Any,
                       survivors: list[str], dropped: list[str]) -> None:
    """A deployed node (network CA configured) unmasks only a story (S, D) that it signed itself for this
    (job, round) and that ``need`` distinct survivors signed (``conssig.<c>``/``conscert.<c>``, relayed by the
    server; each checked: chain to the network CA, CN = c, c ∈ S, the statement of this run, signed spec, job,
    round, S and D). Anything short raises one :class:`SecureAggregationError` before any key word, pad or
    share is read. A node without a CA (an unsigned simulation) follows the server (docs §9)."""
    from labqfl.fl.flower.identity import ReplyRefused
    from labqfl.fl.flower.specsig import pinned_survivors

    verifier = _peer_verifier(context, name, r)
    if verifier is None:
        return
    head = f"round {r}: the unmask message to {name} (survivors {sorted(survivors)}, dropped {sorted(dropped)})"
    participants, t = _round_plan(context, name, r, run_tag, "unmask")
    if set(survivors) | set(dropped) != set(participants) or set(survivors) & set(dropped):
        raise SecureAggregationError(f"{head}: together these are not this round's participants {participants} (as "
                                     f"{name}'s mask stage checked them): {name} reveals nothing: refused")
    need = spec.consistency_need(t)
    job, path = _consistency_ctx(context, spec, name, signed)
    pinned = pinned_survivors(path, job, r)
    if pinned != (sorted(survivors), sorted(dropped)):
        mine = f"survivors {pinned[0]}, dropped {pinned[1]}" if pinned is not None else "no survivor set"
        raise SecureAggregationError(f"{head}: {name} signed {mine} for this round of job {job!r}: "
                                     f"{name} reveals nothing: refused")
    signers = sorted(k[len("conssig."):] for k in cfg.keys() if str(k).startswith("conssig."))
    if not signers:
        raise SecureAggregationError(f"{head} carries no consistency signatures; {name} (network CA configured) "
                                     "unmasks only a survivor set that the survivors signed: refused")
    for c in signers:
        try:
            if c not in survivors:
                raise ReplyRefused(f"{c!r} is not a survivor")
            verifier.verify_consistency(cfg.get(f"conscert.{c}", ""), cfg.get(f"conssig.{c}"), signer=c, run=run_tag,
                                        spec_id=signed.spec_id, job=job, round_index=r, survivors=survivors,
                                        dropped=dropped)
        except ReplyRefused as exc:
            raise SecureAggregationError(f"{head}: the consistency signature of {c} is refused: {exc}; {name} "
                                         "reveals nothing: refused") from None
    if len(signers) < need:
        raise SecureAggregationError(f"{head} carries {len(signers)} consistency signature(s) ({signers}), at least "
                                     f"{need} needed ({CONSISTENCY_NEED_RULE}, c = "
                                     f"{spec.tolerated_colluders()}); {name} reveals nothing: refused")


def _unmask(msg: Message, context: Context, spec: FlowerSpec, name: str, r: int, n: int, run_tag: str,
            signed: Any = None) -> Message:
    """Stage ``unmask`` (self-masks): the keys of dropped partners and the shares of surviving
    clients' self-masks, one kind per peer (the guard refuses anything else). A deployed node first
    requires the consistency signatures over the message's survivor set (:func:`_check_consistency`)."""
    cfg = msg.content.config_records[CFG]
    q, w = spec.q, share_bits(spec.q)
    st = context.state
    dropped = _cfg_strs(cfg, "dropped")
    survivors = _cfg_strs(cfg, "survivors")
    _check_consistency(context, cfg, spec, name, r, run_tag, signed, survivors, dropped)
    _check_dp_dropouts(spec, name, r, "unmask", dropped, survivors)
    want = _cfg_strs(cfg, "pairs")
    owners = _cfg_strs(cfg, "share_owners")
    for p in want:
        if name not in split_pair(p):
            raise SecureAggregationError(f"round {r}: {name} refuses to reveal pair {p}: not one of its pairs")
    guard = _load_guard(context, r, name)
    guard.authorize(key_peers=[_peer(name, p) for p in want], share_peers=owners, dropped=dropped, survivors=survivors)
    st[STATE_GUARD] = ConfigRecord({"round": r, "kinds": json.dumps(guard.as_dict())})
    cts = msg.content.array_records.get("cts", ArrayRecord())
    keys_out, shares_out = ArrayRecord(), ArrayRecord()
    res = _reservations(context) if spec.keys == "qkd" else None
    kids = res["kids"] if res is not None else {}
    by_peer = {_peer(name, p): p for p in kids if not p.endswith((PAD, TAG))} if spec.keys == "qkd" else {}
    pks = _peer_public_keys(context, cfg, name, r, run_tag, [*(_peer(name, p) for p in want),
                                                             *(o for o in owners if o != name)]) \
        if spec.keys == "csprng" else {}
    ks = NodeKeyStore(name, _keystore_dir(context, spec)) if spec.keys == "qkd" else None
    try:
        for p in want:
            if spec.keys == "qkd":
                assert ks is not None
                if p not in kids:
                    raise SecureAggregationError(f"round {r}: {name} holds no reservation for pair {p}")
                keys_out[p] = Array(ks.take_words(kids[p], n, q))  # consumed now: spent either way
            else:
                sk = bytes(st.config_records[STATE_SECRET]["sk"])  # type: ignore[arg-type]
                keys_out[p] = Array(ecdh_words(sk, pks[_peer(name, p)], p, n, q, round_index=r, run_tag=run_tag))
        for o in owners:
            if o == name:
                if STATE_OWNSHARE not in st:
                    raise SecureAggregationError(f"round {r}: {name} holds no share of its own self-mask")
                shares_out[o] = Array(st.array_records[STATE_OWNSHARE]["share"].numpy().astype(share_dtype(q)))
                continue
            if o not in cts:
                raise SecureAggregationError(f"round {r}: {name} was asked for {o}'s share but got no ciphertext")
            ct = np.asarray(cts[o].numpy())
            if spec.keys == "qkd":
                assert ks is not None
                p = by_peer.get(o, "")
                if p + PAD not in kids:
                    raise SecureAggregationError(f"round {r}: {name} holds no share pad for a pair with {o}")
                pad = ks.pad_words(kids[p + PAD], n, w, 0 if split_pair(p)[0] == o else 1,
                                   for_mask=False)  # the partner's half: a decryption, not a mask
            else:
                sk = bytes(st.config_records[STATE_SECRET]["sk"])  # type: ignore[arg-type]
                a, b = (o, name) if spec.index_of(o) < spec.index_of(name) else (name, o)
                pad = ecdh_pad_words(sk, pks[o], f"{a}-{b}", n, w, 0 if a == o else 1, round_index=r,
                                     run_tag=run_tag)
            shares_out[o] = Array(encrypt_share(ct, pad))
            pad[:] = 0
    finally:
        if ks is not None:
            ks.close()
    if spec.keys == "qkd":
        _finish_reservations(context, spec, name)
    else:
        _clear_secret(context)
    for k in (STATE_OWNSHARE, STATE_OWNSHARE + ".round"):
        if k in st:
            del st[k]
    return _reply(msg, revealed=keys_out, shares=shares_out)


# ------------------------------------------------------------------------------ the app
def train_update(spec: FlowerSpec, name: str, params: np.ndarray, round_index: int) -> tuple[np.ndarray, int, float]:
    """The local update of client ``name`` in round r: (local − global (P,) float64, n samples, loss).

    Same function and seeds as the in-process engine (:func:`labqfl.fl.training.local_train`,
    shuffling seed ``[seed, r, i]`` with i the client's index). Under a noise model with shots the
    shots come from this call's own generator (``[seed, r, i]``), not from the in-process engine's
    one generator for all clients: the same distribution, not the same draws.
    """
    from labqfl.fl.training import local_train

    model = spec.model((round_index, spec.index_of(name)))  # with noise: this call's own shot stream
    x, y = spec.client_data(name)
    g = as_float64(params)
    new, losses = local_train(model, g, [(x, y)], spec.local(), [[spec.seed, round_index, spec.index_of(name)]])
    return new[0] - g, len(y), float(losses[0])


def labqfl_identity_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Sign the reply to every server message that carries a reply nonce with this node's
    certificate key (node config ``labqfl-cert``/``labqfl-key``, the files of the certificate the
    SuperNode presents to the server's front; :mod:`labqfl.fl.flower.identity`): run ID, nonce,
    stage, round, the claimed client name and a digest of the whole reply. Without a key in the
    node config (a simulation) replies go unsigned; error replies are never signed."""
    from labqfl.fl.flower.identity import NODE_CERT, NODE_KEY, NONCE, signer_from_files

    rep = call_next(msg, context)
    if CFG not in msg.content.config_records or rep.has_error():
        return rep
    cfg = msg.content.config_records[CFG]
    nc = context.node_config
    if NONCE not in cfg or NODE_CERT not in nc:
        return rep
    signer = signer_from_files(str(nc[NODE_CERT]), str(nc.get(NODE_KEY, "")))
    signer.sign(rep, run=str(cfg.get("run_tag", "")), nonce=str(cfg[NONCE]), stage=str(cfg.get("stage", "")),
                round_index=_cfg_int(cfg, "round") if "round" in cfg else 0,
                name=node_name(context, FlowerSpec.from_config(cfg)))
    return rep


def setup_request(msg: Message, context: Context) -> tuple[FlowerSpec, str]:
    """The setup query's spec and this node's name, once the message passed the signed-spec check
    (:func:`_check_signed_spec`: a deployed node answers no server whose settings are not the operator's)."""
    cfg = msg.content.config_records[CFG]
    spec = FlowerSpec.from_config(cfg)
    name = node_name(context, spec)
    if _check_signed_spec(context, cfg, spec, name, 0, str(cfg.get("run_tag", "")), "setup") is None:
        _warn_unprotected(context, name)
    return spec, name


def _warn_unprotected(context: Context, name: str) -> None:
    """A deployed SuperNode (its ClientApps behind labqfl's FAB guard) with no network CA and no signing key
    in its node config enforces no operator-signed spec and no peer signatures: it follows the server's
    settings as an unsigned simulation does. One warning line at each run's first message (setup), so a
    hand-started SuperNode (docs/flower.md, Deployment step 2) says so (review s35 second look F10)."""
    from labqfl.fl.flower import fabguard
    from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY

    if fabguard.installed():
        log.warning("%s: this SuperNode has no network CA (node config %r) and no signing key (%r/%r): it enforces "
                    "no operator-signed spec and no peer signatures and follows the server's settings; start it "
                    "with labqfl node supernode, or give it those three node config keys", name, NODE_CA,
                    NODE_CERT, NODE_KEY)



def make_client_app() -> ClientApp:
    """The labqfl ClientApp: setup query, training function wrapped by :func:`labqfl_secagg_mod`,
    every reply signed by :func:`labqfl_identity_mod` (deployment)."""
    app = ClientApp(mods=[labqfl_identity_mod])

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        spec, name = setup_request(msg, context)
        _, y = spec.client_data(name)
        return _reply(msg, labqfl=ConfigRecord({"name": name, "num_examples": len(y), "pid": os.getpid()}))

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        cfg = msg.content.config_records[CFG]
        spec = FlowerSpec.from_config(cfg)
        name = node_name(context, spec)
        params = msg.content.array_records["params"]["params"].numpy()
        upd, n_ex, loss = train_update(spec, name, params, _cfg_int(cfg, "round"))
        return _reply(msg, update=ArrayRecord({"update": Array(upd)}),
                      metrics=MetricRecord({"num_examples": n_ex, "train_loss": loss}))

    return app


def uint_array(a: Any, q: int) -> np.ndarray:
    """A received masked vector as ``uint{q}`` (refuses another dtype)."""
    arr = np.asarray(a)
    if arr.dtype != uint_dtype(q):
        raise SecureAggregationError(f"masked upload has dtype {arr.dtype}, expected {uint_dtype(q)}")
    return arr.reshape(-1)
