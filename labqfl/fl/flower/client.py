"""Flower ClientApp: local training plus the client-side masking mod.

Message types (server → client; the payload's ConfigRecord ``"labqfl"`` holds the run spec and
the stage's fields):

- ``query.labqfl_setup``: the node answers its client name and sample count (public FedAvg weight).
- ``train`` with ``stage`` in ``keys | mask | reveal | end``: handled by
  :func:`labqfl_secagg_mod`, a Flower *mod* wrapped around the training function:

  * ``keys``: for each pair it masters the node consumes q·P bits of its own key store and
    answers the refs (``qkd``), or answers a fresh X25519 public key (``csprng``);
  * ``mask``: the mod calls the training function (which returns the float update), clips and
    quantises it on the node's integer range, adds the pairwise masks and answers only the
    masked ``uint{q}`` vector — the unmasked update never leaves the mod;
  * ``reveal``: a survivor answers the key words it shared with dropped partners (dropout
    recovery; those keys are spent either way);
  * ``end``: the round's key state is wiped.

Between ``keys`` and ``reveal`` of one round the node keeps its pair words (qkd) or its X25519
private key (csprng) in ``Context.state`` — Flower's node-local state, which never leaves the
node's machine (SecAgg+'s ``secaggplus_mod`` keeps its secrets there too); it is deleted at the
next stage that does not need it, at ``end`` and at the start of every later round.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.keys import NodeKeyStore, ecdh_words, new_ecdh_key, stochastic_rng
from labqfl.fl.flower.spec import FlowerSpec, as_float64, client_index
from labqfl.fl.masks import mask_update, pair_sign, split_pair
from labqfl.fl.quantize import quantize, uint_dtype
from labqfl.log import get_logger

log = get_logger(__name__)

CFG = "labqfl"
STATE_WORDS = "labqfl.words"
STATE_SECRET = "labqfl.secret"
#: node_config keys of a deployed SuperNode.
NODE_NAME = "labqfl-client"
NODE_KEYSTORE = "labqfl-keystore"
NODE_DROP_ROUND = "labqfl-crash-in-round"  # tests: the ClientApp process dies after masking, before upload


def node_name(context: Context) -> str:
    """This node's client name: ``node_config["labqfl-client"]`` (deployment) or C{partition-id + 1}."""
    nc = context.node_config
    if NODE_NAME in nc:
        return str(nc[NODE_NAME])
    if "partition-id" in nc:
        return f"C{int(nc['partition-id']) + 1}"
    raise SecureAggregationError(
        f"node has no client name: start the SuperNode with --node-config \"{NODE_NAME}='C1'\"")


def _keystore_dir(context: Context, spec: FlowerSpec) -> str:
    d = str(context.node_config.get(NODE_KEYSTORE, "") or spec.keystore_dir)
    if not d:
        raise SecureAggregationError(
            f"keys qkd: node has no key store folder (node_config {NODE_KEYSTORE!r} or the spec's keystore_dir)")
    return d


def _wipe(context: Context) -> None:
    st = context.state
    if STATE_WORDS in st:
        for arr in st.array_records[STATE_WORDS].values():
            arr.data = b""
        del st[STATE_WORDS]
    if STATE_SECRET in st:
        del st[STATE_SECRET]


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def _words_record(words: dict[str, np.ndarray]) -> ArrayRecord:
    rec = ArrayRecord()
    for p, w in words.items():
        rec[p] = Array(w)
    return rec


# ------------------------------------------------------------------------------- the mod
def labqfl_secagg_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client-side secure-aggregation mod (see module docstring). Non-labqfl messages pass through."""
    if CFG not in msg.content.config_records:
        return call_next(msg, context)
    cfg = msg.content.config_records[CFG]
    stage = str(cfg.get("stage", ""))
    spec = FlowerSpec.from_config(cfg)
    name = node_name(context)
    r = int(cfg["round"])
    q = spec.q
    n = int(cfg["n_params"])
    run_tag = str(cfg["run_tag"])
    st = context.state
    if STATE_SECRET in st and int(st.config_records[STATE_SECRET]["round"]) != r:
        _wipe(context)  # a previous round's leftovers (e.g. an aborted round)

    if stage == "keys":
        _wipe(context)
        masters = [str(p) for p in cfg.get("master_pairs", [])]
        out = ConfigRecord()
        if spec.keys == "qkd":
            words: dict[str, np.ndarray] = {}
            ks = NodeKeyStore(name, _keystore_dir(context, spec), starvation_timeout_s=spec.wait_for_keys_s)
            try:
                for p in masters:
                    w, refs = ks.master_words(p, n, q, round_index=r)
                    words[p] = w
                    out[f"refs.{p}"] = json.dumps(refs)
            finally:
                ks.close()
            st[STATE_WORDS] = _words_record(words)
            st[STATE_SECRET] = ConfigRecord({"round": r})
        else:
            priv, pub = new_ecdh_key()
            st[STATE_SECRET] = ConfigRecord({"round": r, "sk": priv})
            out["pk"] = pub
        return _reply(msg, labqfl=out)

    if stage == "mask":
        if STATE_SECRET not in st:
            raise SecureAggregationError(f"round {r}: mask stage at {name} without a keys stage")
        secret = st.config_records[STATE_SECRET]
        pairs = [str(p) for p in cfg.get("pairs", [])]
        # 1. the training function returns the float update
        res = call_next(msg, context)
        if res.has_error():
            return res
        update = as_float64(res.content.array_records["update"]["update"].numpy())
        metrics = res.content.metric_records.get("metrics", MetricRecord())
        if update.size != n:
            raise SecureAggregationError(f"update of {name} has {update.size} parameters, expected {n}")
        # 2. clip and quantise on this node's range (stochastic rounding: the in-process stream)
        rng = stochastic_rng(spec.seed, r, int(cfg["position"]), n) if spec.rounding == "stochastic" else None
        v, n_clipped = quantize(update, clip=spec.clip, levels=int(cfg["levels"]), q=q,
                                rounding=spec.rounding, rng=rng)  # type: ignore[arg-type]
        del update
        # 3. pair words: own store / ECDH
        words: dict[str, np.ndarray] = {}
        if spec.keys == "qkd":
            held = st.array_records[STATE_WORDS] if STATE_WORDS in st else ArrayRecord()
            ks = NodeKeyStore(name, _keystore_dir(context, spec))
            try:
                for p in pairs:
                    if pair_sign(name, p) > 0:
                        if p not in held:
                            raise SecureAggregationError(f"round {r}: {name} holds no key for pair {p}")
                        words[p] = held[p].numpy()
                    else:
                        refs = json.loads(str(cfg[f"refs.{p}"]))
                        words[p] = ks.slave_words(p, refs, n, q, round_index=r)
            finally:
                ks.close()
        else:
            sk = bytes(secret["sk"])  # type: ignore[arg-type]
            for p in pairs:
                a, b = split_pair(p)
                peer = b if a == name else a
                words[p] = ecdh_words(sk, bytes(cfg[f"pk.{peer}"]), p, n, q, round_index=r, run_tag=run_tag)  # type: ignore[arg-type]
        y = mask_update(name, v, words, q)
        # keep only what a reveal may need: qkd words of this round (csprng re-derives from sk)
        if spec.keys == "qkd":
            st[STATE_WORDS] = _words_record(words)
        for w in words.values():
            w[:] = 0
        if int(context.node_config.get(NODE_DROP_ROUND, -1)) == r:
            log.warning("%s: crashing after masking round %d (test hook %s)", name, r, NODE_DROP_ROUND)
            os._exit(17)
        metrics["clipped_values"] = int(n_clipped)
        return _reply(msg, masked=ArrayRecord({"masked": Array(y)}), metrics=metrics)

    if stage == "reveal":
        dropped = {str(c) for c in cfg.get("dropped", [])}
        want = [str(p) for p in cfg.get("pairs", [])]
        out_rec = ArrayRecord()
        for p in want:
            a, b = split_pair(p)
            if name not in (a, b) or (b if a == name else a) not in dropped or name in dropped:
                raise SecureAggregationError(
                    f"round {r}: {name} refuses to reveal pair {p}: only keys shared with a dropped partner are revealed")
            if spec.keys == "qkd":
                held = st.array_records.get(STATE_WORDS)
                if held is None or p not in held:
                    raise SecureAggregationError(f"round {r}: {name} no longer holds the key of pair {p}")
                out_rec[p] = Array(held[p].numpy())
            else:
                secret = st.config_records[STATE_SECRET]
                peer = b if a == name else a
                pk = bytes(cfg[f"pk.{peer}"])  # type: ignore[arg-type]
                out_rec[p] = Array(ecdh_words(bytes(secret["sk"]), pk, p, n, q, round_index=r, run_tag=run_tag))  # type: ignore[arg-type]
        _wipe(context)
        return _reply(msg, revealed=out_rec)

    if stage == "end":
        _wipe(context)
        return _reply(msg, labqfl=ConfigRecord({"ok": True}))
    raise SecureAggregationError(f"unknown labqfl stage {stage!r}")


# ------------------------------------------------------------------------------ the app
def train_update(spec: FlowerSpec, name: str, params: np.ndarray, round_index: int) -> tuple[np.ndarray, int, float]:
    """The local update of client ``name`` in round r: (local − global (P,) float64, n samples, loss).

    Same function and seeds as the in-process engine (:func:`labqfl.fl.training.local_train`,
    shuffling seed ``[seed, r, i]`` with i the client's index).
    """
    from labqfl.fl.training import local_train

    model = spec.model()
    x, y = spec.data().clients[name]
    g = as_float64(params)
    new, losses = local_train(model, g, [(x, y)], spec.local(), [[spec.seed, round_index, client_index(name)]])
    return new[0] - g, len(y), float(losses[0])


def make_client_app() -> ClientApp:
    """The labqfl ClientApp: setup query, training function wrapped by :func:`labqfl_secagg_mod`."""
    app = ClientApp()

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        spec = FlowerSpec.from_config(msg.content.config_records[CFG])
        name = node_name(context)
        _, y = spec.data().clients[name]
        return _reply(msg, labqfl=ConfigRecord({"name": name, "num_examples": len(y), "pid": os.getpid()}))

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        cfg = msg.content.config_records[CFG]
        spec = FlowerSpec.from_config(cfg)
        name = node_name(context)
        params = msg.content.array_records["params"]["params"].numpy()
        upd, n_ex, loss = train_update(spec, name, params, int(cfg["round"]))
        return _reply(msg, update=ArrayRecord({"update": Array(upd)}),
                      metrics=MetricRecord({"num_examples": n_ex, "train_loss": loss}))

    return app


def uint_array(a: Any, q: int) -> np.ndarray:
    """A received masked vector as ``uint{q}`` (refuses another dtype)."""
    arr = np.asarray(a)
    if arr.dtype != uint_dtype(q):
        raise SecureAggregationError(f"masked upload has dtype {arr.dtype}, expected {uint_dtype(q)}")
    return arr.reshape(-1)
