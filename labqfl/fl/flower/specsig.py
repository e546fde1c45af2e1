"""The operator-signed training spec of a Flower run (docs/secure_aggregation.md §9).

Every server message carries the run's :class:`~labqfl.fl.flower.spec.FlowerSpec` (``spec.*``
fields), and a node checks each message against that spec (mask graph, threshold, DP plan, ...).
Without a signature the spec is the server's word: a malicious server could choose a sparser
graph, threshold 1, DP off, other participants, for the whole run. Here the network's **operator**
signs it, and each deployed node refuses any message whose settings depart from what the operator
signed.

Who signs: the operator's certificate ``ctl`` (``labqfl keys certs`` / ``labqfl node certs``:
:func:`labqfl.net.make_node_certs` issues it from the network CA as a client-only certificate,
EKU clientAuth, URI ``urn:labqfl:node:ctl``), not the CA key itself. The CA key's one job is to
issue certificates (``labqfl run`` destroys its throwaway CA key once the certificates are issued),
it never signs data, so no CA signature over data can ever be mistaken for a certificate and the
CA key can stay offline; the operator's key is the one ``labqfl node train`` already holds to
submit a run (mutual TLS as ``ctl``), and a node checks it like every other node signature: the
chain to its network CA (node config ``labqfl-ca``), a node certificate whose CN is the operator
``ctl``, which no client or server certificate of the network carries, and client-only usage (a
``ctl`` certificate that could serve TLS was not issued as the operator's).

What is signed: :data:`SPEC_SIG_DOMAIN` ‖ the canonical JSON (sorted keys, no spaces) of
``{"version": 1, "spec_id", "issued", "expires", "spec": {every FlowerSpec field but the
server's logistics}}`` — the participants (``clients``, ``client_names``), graph and ``k``,
``self_masks`` and ``threshold``, ``min_survivors``, DP ε/δ/H/clip (so the DP plan, which each node
computes from them), ``rounds``, the task, its data and local training, ``q``, ``clip``,
``rounding``, the key mode (``keys``), the noise model, and the rounds this spec authorises
(``first_round``..``last_round``: ``labqfl run`` trains in segments and signs one spec per segment; a node
refuses a round outside them — review s35 third look T1: with the range unsigned, a later segment's spec
authorised every round, and the server re-ran an earlier, masked round under it with another client set).
Left to the server (:data:`UNSIGNED_FIELDS`): timeouts, the key-wait time, a simulation's key-store
folder, the clients it knows are lost before a run starts (``absent``: left out before masking, which any server can do). A node also refuses a validity period over :data:`MAX_VALID_S` (:meth:`SignedSpec.validity_problem`).
Signature: ECDSA P-256 with SHA-256 (or Ed25519), as :class:`~labqfl.fl.flower.identity.ReplySigner`.

Replays: the server may start further runs of a signed spec until it expires, and the DP plan is per
run. So each node records, in its own data folder, which run tag trained which round of which spec
ID, and trains each round of a signed spec once (:func:`claim_round`): a second run of the same spec
is refused where it reaches a round already trained; a later segment's rounds go on. And it records
which rounds it masked an upload for (:func:`claim_mask`, before any mask word is read): one upload
per round of a signed spec, in rising round order, whatever the run tag (a round re-run after a later
one, or by a run that reuses a run tag, is refused).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import functools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labqfl.durable import replace_durably
from labqfl.errors import ConfigError, SecureAggregationError
from labqfl.fl.flower.spec import FlowerSpec

__all__ = ["MAX_VALID_S", "OPERATOR", "SIGNED_SPEC", "SIGNED_SPEC_RUN_CONFIG", "SPEC_RECORD", "SPEC_SIG_DOMAIN", "UNSIGNED_FIELDS",
           "CONSISTENCY_RECORD", "SignedSpec", "claim_mask", "claim_round", "consistency_record_path", "pin_survivors",
           "pinned_survivors", "sign_spec", "spec_departures", "spec_record_path", "spec_settings",
           "spec_signed_bytes"]

#: domain separation of the operator's signature over a training spec (never a reply, refs or key signature)
SPEC_SIG_DOMAIN = b"labqfl-fl-spec-sig/1"
#: the operator's certificate name (:data:`labqfl.net.pki.CLIENT_ONLY`, :data:`labqfl.nodes.common.CTL`)
OPERATOR = "ctl"
#: field of the server's ``labqfl`` ConfigRecord (and the ServerApp's run config) carrying the signed spec
SIGNED_SPEC = "signed_spec"
#: the ServerApp's run config key of the signed spec (:func:`labqfl.fl.flower.deploy.write_app_project`)
SIGNED_SPEC_RUN_CONFIG = "labqfl-signed-spec"
#: FlowerSpec fields the server may set per run: logistics, not the run's settings (module docstring)
UNSIGNED_FIELDS = ("keystore_dir", "wait_for_keys_s", "stage_timeout_s", "straggler_timeout_s", "node_wait_s",
                   "absent", "missing_ok_after_s")
_VERSION = 1
#: the longest a signed spec may be valid [s]: 30 days. A node follows a signed spec until it expires
#: (each round once, :func:`claim_round`), so the window bounds how long the operator's settings can be
#: started again; ``labqfl node train`` signs for its run's timeout + 1 h, ``sign-spec`` for 24 h by default
MAX_VALID_S = 30 * 86400.0


def spec_settings(spec: FlowerSpec) -> dict[str, Any]:
    """The fields of ``spec`` the operator signs (every field but :data:`UNSIGNED_FIELDS`)."""
    return {k: v for k, v in asdict(spec).items() if k not in UNSIGNED_FIELDS}


def spec_signed_bytes(body: str) -> bytes:
    """What the operator signs: :data:`SPEC_SIG_DOMAIN` ‖ the canonical body, each length-prefixed."""
    return b"".join(len(p).to_bytes(8, "big") + p for p in (SPEC_SIG_DOMAIN, body.encode()))


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(s: str) -> datetime.datetime:
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class SignedSpec:
    """A training spec signed by the operator: the canonical ``body`` (JSON), the signature and the
    signer's certificate (PEM). Parsing checks the form only; :func:`checked` checks the signature."""

    body: str
    sig: bytes
    cert_pem: str

    @functools.cached_property
    def content(self) -> dict[str, Any]:  # parsed once per object (every message of a run carries the same)
        try:
            d = json.loads(self.body)
            if not isinstance(d, dict) or d.get("version") != _VERSION or not isinstance(d.get("spec"), dict):
                raise ValueError(f"expected a version-{_VERSION} object with a spec")
            _parse_iso(str(d["expires"]))
            _parse_iso(str(d["issued"]))
            str(d["spec_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SecureAggregationError(f"the signed spec's body is malformed ({exc})") from None
        return d

    @property
    def spec_id(self) -> str:
        return str(self.content["spec_id"])

    @property
    def expires(self) -> datetime.datetime:
        return _parse_iso(str(self.content["expires"]))

    @property
    def issued(self) -> datetime.datetime:
        return _parse_iso(str(self.content["issued"]))

    def validity_problem(self) -> str:
        """Why a node refuses this spec's validity period ("" if it does not): longer than
        :data:`MAX_VALID_S`, or ending before it begins. The signer refuses those (:func:`sign_spec`); a node
        checks them too, as it trusts no signer's tooling (review s35 third look T4)."""
        span = (self.expires - self.issued).total_seconds()
        if not 0 < span <= MAX_VALID_S:
            return (f"valid {span / 3600:g} h from {self.issued:%Y-%m-%d %H:%M:%S} UTC; a node accepts at most "
                    f"{MAX_VALID_S / 3600:.0f} h")
        return ""

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.content["spec"])

    def to_json(self) -> str:
        """One JSON line: ``{"body", "sig" (base64), "cert"}`` (a message field, a run-config value, a file)."""
        return json.dumps({"body": self.body, "sig": base64.b64encode(self.sig).decode(), "cert": self.cert_pem},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, source: str = "the signed spec") -> SignedSpec:
        try:
            d = json.loads(text)
            out = cls(str(d["body"]), base64.b64decode(str(d["sig"]), validate=True), str(d["cert"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SecureAggregationError(f"{source} is not a signed spec ({type(exc).__name__}: {exc}); expected "
                                         "the JSON object that labqfl node sign-spec writes") from None
        out.content  # noqa: B018 - the body's form checked here, once
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> SignedSpec:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: signed spec not found (labqfl node sign-spec writes one)")
        try:
            return cls.from_json(p.read_text(encoding="utf-8"), source=str(p))
        except SecureAggregationError as exc:
            raise ConfigError(str(exc)) from None

    def spec(self, **unsigned: Any) -> FlowerSpec:
        """The FlowerSpec of the signed settings, with the server's logistics ``unsigned`` (default: FlowerSpec's)."""
        bad = [k for k in unsigned if k not in UNSIGNED_FIELDS]
        if bad:
            raise ConfigError(f"{bad}: signed settings, not the server's to set")
        return FlowerSpec(**self.settings, **unsigned)


def sign_spec(spec: FlowerSpec, signer: Any, *, valid_s: float, spec_id: str = "",
              now: datetime.datetime | None = None) -> SignedSpec:
    """The operator's signature over ``spec``'s settings, valid ``valid_s`` seconds from ``now``.
    ``signer``: the operator's :class:`~labqfl.fl.flower.identity.ReplySigner` (certificate ``ctl``)."""
    if getattr(signer, "name", "") != OPERATOR:
        raise ConfigError(f"a training spec is signed with the operator's certificate {OPERATOR!r} (node-ctl.pem), "
                          f"not with {getattr(signer, 'name', '?')!r}'s")
    if not 0 < valid_s <= MAX_VALID_S:  # NaN fails too
        raise ConfigError(f"a signed spec's validity must be more than 0 s and at most {MAX_VALID_S / 3600:.0f} h "
                          f"({MAX_VALID_S / 86400:.0f} days), got {valid_s / 3600:g} h: a node accepts a signed spec "
                          "until it expires, so sign one per run or campaign (review s35 second look F9)")
    t = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    body = json.dumps({"version": _VERSION, "spec_id": spec_id or secrets.token_hex(8), "issued": _iso(t),
                       "expires": _iso(t + datetime.timedelta(seconds=float(valid_s))),
                       "spec": spec_settings(spec)}, sort_keys=True, separators=(",", ":"))
    return SignedSpec(body, signer.signature(spec_signed_bytes(body)), signer.cert_pem)


def spec_departures(signed: SignedSpec, spec: FlowerSpec) -> dict[str, tuple[Any, Any]]:
    """The signed settings ``spec`` departs from: field → (the message's value, the signed value). A spec
    signed before ``job_id`` existed names no job: the empty one (the nodes key its rounds by the job its
    settings give, :meth:`~labqfl.fl.flower.spec.FlowerSpec.derived_job_id`); one signed before ``colluders``
    existed tolerates the default, t − 1 (-1)."""
    want, got = {"job_id": "", "colluders": -1, **signed.settings}, spec_settings(spec)
    return {k: (got.get(k), want.get(k)) for k in sorted(set(want) | set(got)) if got.get(k) != want.get(k)}


# ------------------------------------------------------------------ a node's record of the signed rounds it trained
#: file (in the node's own data folder, :func:`spec_record_path`) recording, per signed spec ID, which run
#: tag trained each of its rounds on this node
SPEC_RECORD = "signed_specs.json"
#: an expired spec's entry is dropped this long after its expiry (a node refuses an expired spec anyway;
#: the margin covers clock steps)
_RECORD_KEEP_S = 7 * 86400.0


def spec_record_path(data_dir: str | Path, node: str) -> Path:
    """``<data_dir>/nodes/<node>/fl/signed_specs.json``: beside the node's SuperNode files (0700 folder)."""
    return Path(data_dir) / "nodes" / node / "fl" / SPEC_RECORD


def claim_round(path: Path, signed: SignedSpec, round_index: int, run_tag: str,
                now: datetime.datetime | None = None) -> None:
    """Record in ``path`` that this node trains round ``round_index`` of ``signed`` under ``run_tag`` (its
    keys stage), or raise :class:`SecureAggregationError` if another run tag already trained that round of
    that spec, or if this node already masked that round or a later one of the spec (:func:`claim_mask`).

    Why: the signature lets the server start runs of the operator's settings until the spec expires, and
    the DP plan (ε for the signed ``rounds``) is per run, so a second run of the same signed spec would
    spend the clients' budget again (review s35). Each round of a signed spec is trained once on a node:
    the same run tag may come back to a round whose upload it did not mask yet (a keys stage repeated
    after a restart), a later segment of the same spec under another run tag trains its own rounds
    (``first_round``..), but a run tag that reaches a round another run tag already trained is refused
    before anything is reserved or drawn. The file is read and rewritten under an exclusive lock (two
    ClientApp processes of the node cannot both claim a round) and replaced atomically (write, fsync,
    rename, fsync of the folder): a crash leaves the old or the new record, never half of one. An
    unreadable record is refused (the node cannot tell which rounds it trained), with the path to inspect."""
    def claim(entry: dict[str, Any], record: dict[str, Any]) -> bool:
        earlier = entry["rounds"].get(str(round_index))
        if earlier is not None and earlier != run_tag:
            runs = sorted(set(entry["rounds"].values()))
            raise SecureAggregationError(
                f"round {round_index} of the operator-signed spec {signed.spec_id} was already trained on this node "
                f"by run {earlier!r} (this node's record {path}: the spec's rounds {_ranges(entry['rounds'])} "
                f"under run(s) {runs}); run {run_tag!r} would train it again and spend the DP budget and keys a "
                "second time: refused (each round of a signed spec is trained once; the operator signs a new "
                "spec for another run)")
        _refuse_masked(path, signed, entry, round_index, run_tag, "train")
        if earlier is not None:
            return False
        entry["rounds"][str(round_index)] = run_tag
        return True

    _update_record(path, signed, claim, now)


def claim_mask(path: Path, signed: SignedSpec, round_index: int, run_tag: str,
               now: datetime.datetime | None = None) -> None:
    """Record in ``path``, before this node reads any mask word of the round, that it masks its one upload
    of round ``round_index`` of ``signed``; or raise :class:`SecureAggregationError` if it masked that round
    of that spec already, or a later one, whatever the run tag (review s35 second look, F2).

    Why: training is deterministic in (parameters, round), so a server that has a node mask round r of a
    spec twice (re-running it after round r+1 under the same run tag, or in a second Flower run that
    reuses the tag) differences the replays: without DP, three replays of round 1 with one client
    withheld each time gave C1's exact update; with DP, k replays average the fresh noise down by √k.
    The record is the node's own (its data folder: a fresh Flower Context or a restarted SuperNode keeps
    it), so each node masks at most one upload per (signed spec, round), ``rounds`` uploads per signed
    spec, in rising round order. ``labqfl run`` trains its segments upward, each under its own signature
    (a resumed run retrains an interrupted round under a new signed spec).

    Under DP the record also keeps, per training job (:meth:`~labqfl.fl.flower.spec.FlowerSpec.job`: one
    across the specs of a job's segments and resumes), the rounds this node masked an upload for, and refuses
    a round of the job masked already under another signed spec: each masked round may be unmasked, and a
    second noisy release of the same round (fresh noise, the same updates) would average the noise down where
    the accountant counts one release (review s36 cons, "DP on resume")."""
    dp_job = signed.spec().job() if float(signed.settings.get("dp_epsilon") or 0.0) > 0 else None

    def claim(entry: dict[str, Any], record: dict[str, Any]) -> bool:
        _refuse_masked(path, signed, entry, round_index, run_tag, "mask an upload for")
        if dp_job is not None:
            released = record.setdefault("dp_jobs", {}).setdefault(dp_job, {})
            earlier = released.get(str(round_index))
            if earlier is not None and earlier != signed.spec_id:
                raise SecureAggregationError(
                    f"round {round_index} of DP training job {dp_job!r}: this node masked its upload of that round "
                    f"already, under the signed spec {earlier} (its record {path}); the signed spec "
                    f"{signed.spec_id} asks for it again: refused (under DP each masked round may have been "
                    "released, and a second release of the same round with fresh noise would average the noise "
                    "down beyond what the accountant counts). Go on from the next round, or train another job "
                    "(another seed, or --job-id)")
            released[str(round_index)] = signed.spec_id
        entry.setdefault("masked", {})[str(round_index)] = run_tag
        return True

    _update_record(path, signed, claim, now)


def _refuse_masked(path: Path, signed: SignedSpec, entry: dict[str, Any], round_index: int, run_tag: str,
                   what: str) -> None:
    masked = entry.get("masked", {})
    if not masked:
        return
    top = max(int(k) for k in masked)
    if round_index > top:
        return
    again = str(round_index) in masked
    why = (f"this node already masked its upload of round {round_index} (run {masked[str(round_index)]!r})"
           if again else f"this node already masked round {top}, a later round (rounds go upward)")
    raise SecureAggregationError(
        f"round {round_index} of the operator-signed spec {signed.spec_id}: {why} (this node's record {path}: "
        f"masked rounds {_ranges(masked)}); run {run_tag!r} asks it to {what} that round again: refused (a node "
        "masks one upload per round of a signed spec: a second one of the same round lets the server difference "
        "them; the operator signs a new spec to train again)")


def _update_record(path: Path, signed: SignedSpec, claim: Any, now: datetime.datetime | None) -> None:
    """Apply ``claim(entry, record)`` (refuses by raising; ``True``: write) to ``signed``'s entry of the record at
    ``path``, under the record's lock, written atomically; expired entries are pruned when it writes."""
    with _locked(path):
        record = _read_record(path)
        entry = record["specs"].setdefault(signed.spec_id, {"expires": _iso(signed.expires), "rounds": {}})
        if claim(entry, record):
            t = now or datetime.datetime.now(datetime.UTC)
            record["specs"] = {k: v for k, v in record["specs"].items()
                               if (t - _parse_iso(str(v["expires"]))).total_seconds() < _RECORD_KEEP_S}
            _write_record(path, record)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the record at ``path`` (its ``.lock`` file beside it, in a 0700 folder), held
    for the block: two ClientApp processes of one node read and rewrite it one after the other."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)  # releases the lock


def _ranges(rounds: dict[str, str]) -> str:
    return ", ".join(sorted(rounds, key=int))


def _read_record(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": 1, "specs": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("version") != 1 or not isinstance(record.get("specs"), dict):
            raise ValueError("expected {\"version\": 1, \"specs\": {...}}")
        for sid, v in record["specs"].items():
            if not isinstance(v, dict) or not isinstance(v.get("rounds"), dict) \
                    or not isinstance(v.get("masked", {}), dict):
                raise ValueError(f"spec {sid!r} has no rounds table")
            for table in ("rounds", "masked"):  # round numbers (review s35 third look T5: a bare ValueError later)
                if bad := [k for k in v.get(table, {}) if not str(k).isdigit()]:
                    raise ValueError(f"spec {sid!r} has {table} keys {bad} that are not round numbers")
            _parse_iso(str(v.get("expires")))
        jobs = record.get("dp_jobs", {})
        if not isinstance(jobs, dict) or not all(isinstance(t, dict) and all(str(k).isdigit() for k in t)
                                                 for t in jobs.values()):
            raise ValueError("dp_jobs is not a table of jobs, each a table of round numbers")
    except (OSError, ValueError) as exc:
        raise SecureAggregationError(f"this node's record of the signed specs it trained under, {path}, cannot be "
                                     f"read ({exc}); refusing to train under any signed spec until it is restored "
                                     "(it tells which rounds of which spec were trained already)") from None
    return record


def _write_record(path: Path, record: dict[str, Any]) -> None:
    replace_durably(path, json.dumps(record, sort_keys=True, indent=1), mode=0o600)


# ------------------------------------------------------- a node's record of the survivor sets it signed (self-masks)
#: file beside :data:`SPEC_RECORD` recording, per training job and round, the survivor and dropped sets this
#: node signed in the consistency stage (:func:`pin_survivors`)
CONSISTENCY_RECORD = "consistency.json"


def consistency_record_path(data_dir: str | Path, node: str) -> Path:
    """``<data_dir>/nodes/<node>/fl/consistency.json``: beside :func:`spec_record_path`'s record."""
    return spec_record_path(data_dir, node).with_name(CONSISTENCY_RECORD)


def pin_survivors(path: Path, job: str, round_index: int, survivors: list[str], dropped: list[str]) -> None:
    """Record in ``path``, before this node signs them, that round ``round_index`` of training job ``job`` has
    these survivor and dropped sets; or raise :class:`SecureAggregationError` naming both sets if it signed
    other ones for that (job, round) already (the same sets again are fine).

    Why (Bonawitz et al., CCS 2017, round 3 *ConsistencyCheck*; docs/secure_aggregation.md §9): an honest node
    signs one (survivors, dropped) per (job, round), under every signed spec and run tag of the job (a resumed
    job retrains an interrupted round under a new signature), so with ``need`` > N/2 signatures required at
    unmask two different stories can never both be unmasked. Same lock and atomic write as
    :func:`claim_round`; entries are kept (a few hundred bytes per round: a pin must outlive every resume)."""
    s, d = sorted(survivors), sorted(dropped)
    with _locked(path):
        record = _read_consistency(path)
        rounds = record["jobs"].setdefault(job, {})
        earlier = rounds.get(str(int(round_index)))
        if earlier is not None:
            if (earlier["survivors"], earlier["dropped"]) != (s, d):
                raise SecureAggregationError(
                    f"round {round_index} of job {job!r}: this node already signed survivors {earlier['survivors']}, "
                    f"dropped {earlier['dropped']} (its record {path}); asked to sign survivors {s}, dropped {d}: "
                    "refused (one survivor set per round of a job: two would let the server unmask two different "
                    "stories)")
            return
        rounds[str(int(round_index))] = {"survivors": s, "dropped": d}
        _write_record(path, record)


def pinned_survivors(path: Path, job: str, round_index: int) -> tuple[list[str], list[str]] | None:
    """The (survivors, dropped) this node signed for round ``round_index`` of job ``job``, or None."""
    with _locked(path):
        got = _read_consistency(path)["jobs"].get(job, {}).get(str(int(round_index)))
    return None if got is None else (list(got["survivors"]), list(got["dropped"]))


def _name_list(v: Any) -> bool:
    """``v`` is what :func:`pin_survivors` writes: a sorted list of distinct strings."""
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and v == sorted(set(v))


def _read_consistency(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": 1, "jobs": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("version") != 1 or not isinstance(record.get("jobs"), dict):
            raise ValueError("expected {\"version\": 1, \"jobs\": {...}}")
        for job, rounds in record["jobs"].items():
            if not isinstance(rounds, dict):
                raise ValueError(f"job {job!r} has no rounds table")
            for r, v in rounds.items():
                if not (isinstance(r, str) and r.isascii() and r.isdigit() and str(int(r)) == r):
                    raise ValueError(f"job {job!r} has a round key {r!r} that is not a round number (0, 1, 2, ...)")
                if not isinstance(v, dict) or not all(_name_list(v.get(k)) for k in ("survivors", "dropped")):
                    raise ValueError(f"job {job!r} round {r!r}: expected sorted lists of distinct client names "
                                     "'survivors' and 'dropped'")
    except (OSError, ValueError) as exc:
        raise SecureAggregationError(f"this node's record of the survivor sets it signed, {path}, cannot be read "
                                     f"({exc}); refusing to sign or unmask until it is restored (it tells which "
                                     "survivor set each round was signed for)") from None
    return record
