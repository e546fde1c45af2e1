"""ETSI GS QKD 014 v1.1.1 key delivery: a KME over the node key stores, served by FastAPI on
uvicorn with HTTPS and mutual TLS.

Model (docs/keystore.md, "ETSI mapping"): one process plays the KME of every node whose store it
holds (``KME-<node>``).  Each SAE is attached to one node (``[saes]`` in the KME config; by
default SAE ID = node name) and is identified by its client certificate (CN or a DNS/URI
subjectAltName equal to the SAE ID; a certificate naming two configured SAEs is refused).  For a master SAE at node *m* asking for keys shared with a
slave SAE at node *s*, the KME

1. reserves ``number × size`` bits of the pair's ``etsi`` pool (then ``general``) in *m*'s store,
   one reservation per key ID, all in one transaction, without reading them
   (:meth:`~labqfl.keystore.KeyStore.reserve_many`),
2. reserves exactly the same bits (by block ID and offset) in *s*'s store for the same key IDs
   (:meth:`~labqfl.keystore.KeyStore.reserve_exact_many`), so no other take can hand them out;
   if *s*'s store refuses (the stores are out of step), *m*'s reservations are released and the
   request fails with nothing consumed at either end — unless some of those bits were already spent
   for good at *s* (consumed long enough ago, exported, absent): those are discarded at *m* too and
   the request is tried again with the following bits (:meth:`KeyDeliveryService._resync`),
3. consumes *m*'s reservations (:meth:`~labqfl.keystore.KeyStore.take_exact_many`: read and
   overwritten in one transaction) and returns the keys to the master.  The slave's ``dec_keys``
   consumes its reservation the same way and gets the same bytes, once.

Endpoints (section 5 of the spec): ``GET /api/v1/keys/{slave_SAE_ID}/status``,
``GET|POST /api/v1/keys/{slave_SAE_ID}/enc_keys``, ``GET|POST /api/v1/keys/{master_SAE_ID}/dec_keys``.
Errors are ``{"message": ..., "details": [...]}`` with 400 (bad request), 401 (unauthorised),
413 (a body beyond :func:`max_body_bytes`) and 503 (server side, including "not enough key" and a
store that cannot be written).  A POST carries its parameters in its body only (spec §5.2, §5.3):
one with a query string gets 400.  Reservations name the KME instance that made them
(:class:`KmeInstance`), so a dead KME's half-done requests are released at once.  Keys are base64 of the bits packed MSB-first.
Multicast (``additional_slave_SAE_IDs``) is not supported: ``max_SAE_ID_count`` is 0 and a
request naming additional slaves gets 400.  ``status`` fills the spec's optional
``status_extension`` object (section 6.1) with the vendor-prefixed ``labqfl_provenance``: where
the pair's keys came from and what their security rests on (:mod:`labqfl.provenance`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import socket
import sqlite3
import ssl
import threading
import time
import tomllib
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from labqfl.errors import ConfigError, InsufficientKeyError, KeyStoreBusyError, KeyStoreError
from labqfl.keystore.material import KeyMaterial, Ref, merge_refs
from labqfl.keystore.store import GENERAL, KeyStore, check_node_name
from labqfl.log import get_logger

log = get_logger(__name__)

API_PREFIX = "/api/v1/keys"
ETSI_PURPOSE = "etsi"
#: vendor key inside the status response's ``status_extension`` (spec 6.1: an optional object)
PROVENANCE_EXTENSION = "labqfl_provenance"
#: tries of one enc_keys when the slave's store refuses bits it already spent (KeyDeliveryService._take_at_both)
RESYNC_ATTEMPTS = 4


#: Largest max_key_per_request a KME config may set: the request-body cap (max_body_bytes, the 413 protection)
#: grows by 1 KiB per key ID, so 1024 keys allow ~1 MiB bodies, and 1024 keys of the largest size are 1 MiB of key
#: per request; 10**12 (review s36 input F9) lifted the cap to ~1 PB.
MAX_KEY_PER_REQUEST_LIMIT = 1024


@dataclass
class KmeSettings:
    """KME configuration: SAE → node map and the limits reported by ``status``.

    ``saes``: ``{SAE_ID: node}``.  ``nodes``: the loop order of the nodes, used to name a pair
    ("Ci-Cj", Ci first) when neither store has seen it yet.  Sizes in bits.
    """

    saes: dict[str, str]
    nodes: list[str] = field(default_factory=list)
    key_size: int = 256
    min_key_size: int = 8
    max_key_size: int = 8192
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    kme_id_prefix: str = "KME-"
    #: bits a slave's store consumed less than this many seconds ago are never spent at the master to
    #: bring the two stores back in step (a partner's take_exact may still be on its way); seconds
    resync_settled_s: float = 60.0
    #: how long a request waits for a key store's write lock held by another process (a ``sqlite3``
    #: shell, a backup) before it answers 503 "key store ... is busy"; seconds (SAE clients time out
    #: long before the stores' default 60 s)
    store_busy_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.saes:
            raise ConfigError("KME config: no SAEs configured; expected [saes] SAE_ID = \"node\" entries")
        for sae, node in self.saes.items():
            if not isinstance(sae, str) or not sae or len(sae) > 128:
                raise ConfigError(f"KME config: SAE ID {sae!r} must be a non-empty string")
            check_node_name(node)
        if not isinstance(self.nodes, list) or not all(isinstance(n, str) for n in self.nodes) \
                or len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"KME config: nodes = {self.nodes!r}; expected a list of distinct node names in loop "
                              "order, e.g. [\"C1\", \"C2\"]")
        if not self.nodes:
            self.nodes = sorted(set(self.saes.values()))
        for node in self.nodes:
            check_node_name(node)
        if not isinstance(self.kme_id_prefix, str) or len(self.kme_id_prefix) > 64 \
                or not self.kme_id_prefix.isprintable():
            raise ConfigError(f"KME config: kme_id_prefix = {self.kme_id_prefix!r}; expected a string of at most 64 "
                              "printable characters (the KME ID is the prefix and the node name)")
        outside = {sae: node for sae, node in self.saes.items() if node not in self.nodes}
        if outside:
            raise ConfigError("KME config: " + "; ".join(f"SAE {sae!r} is attached to node {node!r}"
                                                         for sae, node in outside.items())
                              + f", not one of [kme] nodes = {self.nodes}; check the node names in [saes]")
        for name in ("key_size", "min_key_size", "max_key_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0 or v % 8:
                raise ConfigError(f"KME config: {name} = {v!r}; expected a positive multiple of 8 (bits)")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ConfigError("KME config: expected min_key_size <= key_size <= max_key_size")
        for name, top in (("max_key_per_request", MAX_KEY_PER_REQUEST_LIMIT), ("max_key_count", 10**9)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                raise ConfigError(f"KME config: {name} = {v!r}; expected an integer from 1 to {top}")
        if isinstance(self.resync_settled_s, bool) or not isinstance(self.resync_settled_s, int | float) \
                or not 0 <= self.resync_settled_s < math.inf:
            raise ConfigError(f"KME config: resync_settled_s = {self.resync_settled_s!r}; expected seconds >= 0")
        if isinstance(self.store_busy_timeout_s, bool) or not isinstance(self.store_busy_timeout_s, int | float) \
                or not 0 < self.store_busy_timeout_s <= 3600:
            raise ConfigError(f"KME config: store_busy_timeout_s = {self.store_busy_timeout_s!r}; expected seconds "
                              "in (0, 3600]")

    def kme_id(self, node: str) -> str:
        return f"{self.kme_id_prefix}{node}"


def load_kme_settings(path: Path) -> KmeSettings:
    """Read a KME config TOML::

        [kme]                 # optional; these are the defaults
        key_size = 256        # bits
        min_key_size = 8
        max_key_size = 8192
        max_key_per_request = 128
        max_key_count = 100000
        nodes = ["C1", "C2", "C3", "C4"]   # loop order
        resync_settled_s = 60  # out-of-step bits spent at the slave this long ago are spent at the master too
        store_busy_timeout_s = 5  # wait this long for a store another process write-locks, then 503 "busy"

        [saes]                # SAE ID (certificate CN or SAN) = node
        "SAE-alice" = "C1"
        "SAE-bob" = "C2"
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"KME config {path}: {exc}") from None
    kme = dict(data.get("kme", {}))
    unknown = set(kme) - {"key_size", "min_key_size", "max_key_size", "max_key_per_request", "max_key_count",
                          "nodes", "kme_id_prefix", "resync_settled_s", "store_busy_timeout_s"}
    if unknown or set(data) - {"kme", "saes"}:
        raise ConfigError(f"KME config {path}: unknown keys {sorted(unknown | (set(data) - {'kme', 'saes'}))}")
    saes = data.get("saes")
    if not isinstance(saes, dict) or not all(isinstance(v, str) for v in saes.values()):
        raise ConfigError(f"KME config {path}: expected a [saes] table of SAE_ID = \"node\"")
    try:
        return KmeSettings(saes=dict(saes), **kme)
    except TypeError as exc:
        raise ConfigError(f"KME config {path}: {exc}") from None


def open_kme_stores(settings: KmeSettings, data_dir: Path | None = None) -> dict[str, KeyStore]:
    """``{node: KeyStore}`` for every node an SAE of ``settings`` is attached to, from
    ``<data_dir>/keystore/``.  A node with no store there (a typo in ``[saes]``) is refused with one
    :class:`ConfigError` naming the SAE, the node and the stores found, and no store is created.
    The stores wait ``settings.store_busy_timeout_s`` for a write lock another process holds."""
    from labqfl.keystore.store import default_data_dir, list_node_stores, node_store_path

    ddir = data_dir if data_dir is not None else default_data_dir()
    found = list_node_stores(ddir)
    missing = {sae: node for sae, node in settings.saes.items() if node not in found}
    if missing:
        raise ConfigError("KME config: " + "; ".join(f"SAE {sae!r} is attached to node {node!r}"
                                                     for sae, node in missing.items())
                          + f", which has no key store under {Path(ddir) / 'keystore'} (stores found: "
                          + (", ".join(found) or "none") + "); check the node names in [saes] or give the "
                          "right --data-dir")
    stores: dict[str, KeyStore] = {}
    try:
        for n in sorted(set(settings.saes.values())):
            stores[n] = KeyStore(node_store_path(n, ddir), node=n, create=False,
                                 busy_timeout_s=settings.store_busy_timeout_s)
    except BaseException:
        for st in stores.values():
            st.close()
        raise
    return stores


class EtsiError(Exception):
    """An ETSI 014 error response: HTTP ``status`` with body ``{"message", "details"}``."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.details:
            out["details"] = self.details
        return out


def _echo(value: Any) -> Any:
    """A request value to quote in an error's ``details``, always JSON-serialisable: finite numbers
    and short strings as they are; ``NaN``/``Infinity`` (and numbers like ``1e400`` that parse to
    them), huge integers and arrays/objects as a short description."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2 ** 63) <= value < 2 ** 63 else "an integer beyond 64 bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else f"{value!r} (not a finite number)"
    if isinstance(value, str):
        return value[:64]
    return f"a JSON {'array' if isinstance(value, list | tuple) else 'object'}"


#: Folder, next to the node stores, of the lock files of the running KME instances (:class:`KmeInstance`).
INSTANCE_DIR = ".kme-instances"
#: The member of a reservation's info that names the KME instance whose request made it.
INSTANCE_INFO = "kme_instance"


def _close_instance(fds: list[int], paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class KmeInstance:
    """One running KME (a :class:`KeyDeliveryService`): a random ID written into the info of every
    reservation its requests make, and a lock file ``<store folder>/.kme-instances/<ID>.lock`` per
    store folder, locked (``flock``, exclusive) for as long as the instance lives.  The kernel drops
    the lock when its process dies, however it dies (SIGKILL, a crash); a power cut leaves no lock at
    all.  So another KME can tell, at once and without waiting, whether the instance that made a
    reservation can still finish it (:meth:`alive`): two live KMEs on one data dir never release
    each other's requests in flight, and a dead one's half-done requests are released at once (review
    s33 F3: a KME restarted within ``resync_settled_s`` of a SIGKILL left them reserved for good).

    ``id`` is None when no lock can be made (no ``fcntl``, an unwritable folder): the reservations
    then carry no owner and fall under the age rule (``resync_settled_s``) as before."""

    def __init__(self, folders: Sequence[Path]):
        self.id: str | None = None
        fds: list[int] = []
        paths: list[Path] = []
        try:
            import fcntl

            iid = str(uuid.uuid4())
            for folder in dict.fromkeys(Path(f) for f in folders):
                d = folder / INSTANCE_DIR
                d.mkdir(mode=0o700, exist_ok=True)
                tmp = d / f".{iid}.tmp"  # locked before it gets the name others look for
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"pid {os.getpid()} started {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode())
                os.rename(tmp, d / f"{iid}.lock")
                paths.append(d / f"{iid}.lock")
            self.id = iid
        except (ImportError, OSError) as exc:
            _close_instance(fds, paths)
            fds, paths = [], []
            log.warning("KME: cannot make an instance lock next to the key stores (%s); interrupted requests are "
                        "released only once older than resync_settled_s", exc)
        self._finalizer = weakref.finalize(self, _close_instance, fds, paths)

    def close(self) -> None:
        """Drop the lock (the instance is gone: its reservations may be released by any KME)."""
        self._finalizer()

    @staticmethod
    def sweep(folder: Path) -> None:
        """Remove the lock files of dead instances in ``folder`` (those no reservation named, so
        :meth:`alive` never met them), and temporary ones a start killed before its rename left."""
        d = Path(folder) / INSTANCE_DIR
        try:
            names = [p.name for p in d.iterdir()]
        except OSError:
            return
        for name in names:
            if name.endswith(".lock"):
                KmeInstance.alive(folder, name[:-len(".lock")])
            elif name.startswith(".") and name.endswith(".tmp"):
                KmeInstance.alive(folder, name[1:-len(".tmp")], suffix=".tmp", prefix=".")

    @staticmethod
    def alive(folder: Path, instance_id: str, *, suffix: str = ".lock", prefix: str = "") -> bool:
        """Whether KME instance ``instance_id`` (with a lock in ``folder``) is still running; a dead
        one's lock file is removed.  Unsure (a lock file that cannot be opened or locked for another
        reason): True, so nothing is released."""
        try:
            import fcntl

            uuid.UUID(instance_id)
        except (ImportError, ValueError):
            return True
        path = Path(folder) / INSTANCE_DIR / f"{prefix}{instance_id}{suffix}"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False  # never made here, or removed by a clean stop or an earlier check
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a live process holds it
            return True
        else:
            path.unlink(missing_ok=True)  # dead: its lock file goes (we hold its lock while removing it)
            return False
        finally:
            os.close(fd)


_STORAGE_FAILURES = (("disk is full", "disk full"), ("disk i/o error", "disk I/O error"),
                     ("readonly", "read-only file system or store"), ("read-only", "read-only file system or store"),
                     ("unable to open database file", "the store file cannot be opened"))


def storage_failure(exc: BaseException) -> str | None:
    """A short reason when ``exc`` (a :class:`KeyStoreError` or ``sqlite3`` error) is a failed write
    to the disk (full, I/O error, read-only), not a refusal of the bits; None otherwise."""
    text = str(exc).lower()
    return next((why for needle, why in _STORAGE_FAILURES if needle in text), None)


def _kept_note(kept: Sequence[str], where: str = "") -> str:
    """The end of a 503 message when reservations could not be released."""
    if not kept:
        return ""
    return (f" (but {len(kept)} reservation(s){' ' + where if where else ''} could not be released yet; this KME "
            "releases them as soon as the store can be written)")


class KeyDeliveryService:
    """The KME logic, independent of HTTP: ``status``, ``enc_keys``, ``dec_keys``.

    ``stores``: ``{node: KeyStore}`` for every node an SAE is attached to.  Thread-safe.
    """

    def __init__(self, stores: Mapping[str, KeyStore], settings: KmeSettings):
        missing = sorted({n for n in settings.saes.values()} - set(stores))
        if missing:
            raise ConfigError(f"KME config attaches SAEs to node(s) {missing} with no key store")
        self.stores = dict(stores)
        self.settings = settings
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._recovery_lock = threading.Lock()
        #: reservations this instance could not release (a full disk, a busy store): {node: {key ID}},
        #: released again before each enc_keys (review s33 F5: they stayed until a restart)
        self._unreleased: dict[str, set[str]] = {}
        self._unreleased_lock = threading.Lock()
        folders = list(dict.fromkeys(Path(st.path).resolve().parent for st in self.stores.values()))
        for folder in folders:
            KmeInstance.sweep(folder)
        self.instance = KmeInstance(folders)
        self.recover_interrupted_requests()

    @property
    def instance_id(self) -> str | None:
        """This KME's instance ID (:class:`KmeInstance`), written into its reservations' info."""
        return self.instance.id

    def close(self) -> None:
        """Drop this instance's lock: a KME started later treats its reservations as abandoned."""
        self.instance.close()

    def _abandoned(self, store: KeyStore, d: dict[str, Any], cutoff: str) -> bool:
        """Whether the request that made reservation ``d`` can no longer finish it: its KME instance
        is not running (:meth:`KmeInstance.alive`) — or, for a reservation that names no instance
        (made by a KME before review s33, or one without an instance lock), it is older than ``cutoff``."""
        owner = d["info"].get(INSTANCE_INFO)
        if not isinstance(owner, str):
            return str(d["created"]) <= cutoff
        if owner == self.instance_id:
            return False  # this KME's own request, maybe in flight (failed releases: _retry_unreleased)
        return not KmeInstance.alive(Path(store.path).resolve().parent, owner)

    def recover_interrupted_requests(self, min_age_s: float | None = None) -> list[str]:
        """Release the reservations of enc_keys requests that a stopped KME (SIGKILL, a crash, a
        power cut) left half-done; returns their key IDs.

        An enc_keys request commits three transactions in two stores: the master's reservation, the
        slave's reservation of the same bits, the master's take.  Killed after the first or the
        second, the request never handed a key out (the master's bits are read only by the take),
        but its reservations stayed: the master's bits reserved at the master only, so every request
        with the *slave's* node as master picked them first and was refused there — that direction
        answered 503 for good.  Such reservations — master end still reserved and unread, slave end
        reserved or never made — are released at both ends.  A slave reservation whose master end was
        taken is a delivered key waiting for its dec_keys and stays.  Only reservations of a request
        that can no longer finish are touched (:meth:`_abandoned`): one whose KME instance is gone
        (review s33 F3: at once, whatever its age), or, naming no instance, one older than
        ``min_age_s`` (default ``resync_settled_s``).  Run when the KME starts and whenever a
        slave's store refuses the bits the master's holds next (:meth:`_take_at_both`)."""
        age = float(self.settings.resync_settled_s if min_age_s is None else min_age_s)
        cutoff = (datetime.now(UTC) - timedelta(seconds=age)).isoformat(timespec="microseconds")
        released: list[str] = []
        with self._recovery_lock:
            self._retry_unreleased()
            for node, store in self.stores.items():
                for d in store.pending_reservations(ETSI_PURPOSE):
                    if d["kind"] == "reserve" and self._abandoned(store, d, cutoff):  # unread: no key handed out
                        released += self._recover_one(node, d)
        if released:
            log.warning("KME: released %d reservation(s) of enc_keys requests a stopped KME left half-done (no key "
                        "was handed out for them): %s", len(released), ", ".join(released))
        return released

    def _recover_one(self, node: str, d: dict[str, Any]) -> list[str]:
        """Release abandoned reservation ``d`` at ``node`` (and its master end's partner); the key IDs released."""
        master = self.settings.saes.get(str(d["info"].get("master_SAE_ID")))
        other = [n for n in str(d["pair"]).split("-") if n != node]
        partner = self.stores.get(other[0]) if other else None
        if master is None or partner is None:
            return []  # an SAE no longer configured, or the partner's store not here: left as it is
        kid = str(d["key_id"])
        peer = partner.delivery(kid)
        if master != node:  # a slave end: a delivered key waits for dec_keys, unless its master end is gone
            if peer is None or peer["state"] == "released":
                return [] if self._release(node, [([], kid)]) else [kid]
            return []
        if peer is not None and peer["state"] == "reserved":
            self._release(other[0], [([], kid)])
        return [] if self._release(node, [([], kid)]) else [kid]

    def _retry_unreleased(self) -> None:
        """Release again the reservations this instance failed to release before (a full disk); those
        that fail again are kept for the next try (:meth:`_release`)."""
        with self._unreleased_lock:
            todo = {node: sorted(kids) for node, kids in self._unreleased.items() if kids}
            self._unreleased.clear()
        for node, kids in todo.items():
            for kid in kids:
                if self.stores[node].reservation(kid) is not None:
                    self._release(node, [([], kid)])

    def _keep_unreleased(self, node: str, kids: Sequence[str]) -> None:
        with self._unreleased_lock:
            self._unreleased.setdefault(node, set()).update(kids)

    # -- helpers

    def _node(self, sae: str, role: str) -> str:
        node = self.settings.saes.get(sae)
        if node is None:  # the configured SAE IDs are not listed: any certified SAE could map the network
            raise EtsiError(400, f"{role} {_echo(sae)!r} is not known to this KME", [{"parameter": role}])
        return node

    def _pair(self, a: str, b: str) -> str:
        if a == b:
            raise EtsiError(400, f"master and slave SAE are both attached to node {a}; no QKD key links a node to itself")
        ab, ba = f"{a}-{b}", f"{b}-{a}"
        for store in (self.stores[a], self.stores[b]):
            pairs = store.pairs()
            if ab in pairs:
                return ab
            if ba in pairs:
                return ba
        order = self.settings.nodes
        if a in order and b in order and order.index(b) < order.index(a):
            return ba
        return ab

    def _lock(self, pair: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(pair, threading.Lock())

    def _stored_keys(self, pair: str, m: str, s: str, size: int) -> int:
        bits = min(self.stores[m].available_bits(pair, ETSI_PURPOSE), self.stores[s].available_bits(pair, ETSI_PURPOSE))
        return bits // size

    @staticmethod
    def _busy(node: str, exc: KeyStoreBusyError, consumed: str = "no key was consumed") -> EtsiError:
        """503 for a store another process write-locks (not "out of step": nothing is wrong with the keys)."""
        log.warning("KME: key store of node %s is busy (another process holds its write lock for %g s or more); "
                    "%s", node, exc.waited_s, consumed)
        return EtsiError(503, f"key store of node {node} is busy (another process holds its write lock); retry "
                              f"later; {consumed}", [{"node": node, "reason": str(exc)}])

    def _reserve_at_master(self, pair: str, m: str, sizes: list[int], info: dict[str, Any]) -> list[tuple[list[Ref], str]]:
        """Reserve at the master's store, under a fresh key ID per key, the bits a take would pick
        (pool ``etsi``, then ``general``), all in one transaction (:meth:`KeyStore.reserve_many`); no
        bit is read.  Returns ``[(refs, key_ID)]``."""
        kids = [str(uuid.uuid4()) for _ in sizes]
        try:
            refs = self.stores[m].reserve_many(pair, sizes, ETSI_PURPOSE, kids, info=info)
        except InsufficientKeyError as exc:
            raise EtsiError(503, "not enough key material for this request", [{"reason": str(exc)}]) from None
        except KeyStoreBusyError as exc:
            raise self._busy(m, exc) from None
        except (KeyStoreError, sqlite3.Error) as exc:
            why = storage_failure(exc)
            if why:
                raise self._unwritable(m, why, exc, "no key was handed out") from None
            raise EtsiError(503, "key store error at the master's KME; no key was handed out",
                            [{"reason": str(exc)}]) from None
        return list(zip(refs, kids, strict=True))

    @staticmethod
    def _unwritable(node: str, why: str, exc: BaseException, consumed: str) -> EtsiError:
        """503 for a store that cannot be written (review s33 F5: a full disk answered "out of step")."""
        log.error("KME: key store of node %s cannot be written (%s): %s; %s", node, why, exc, consumed)
        return EtsiError(503, f"key store of node {node} cannot be written ({why}); {consumed}",
                         [{"node": node, "reason": str(exc)}])

    def _release(self, node: str, items: Sequence[tuple[list[Ref], str]]) -> list[str]:
        """Release the reservations ``items`` at ``node``'s store; returns the key IDs that stay reserved.
        Those kept because the store could not be written (busy, disk full) are released again before
        the next enc_keys (:meth:`_retry_unreleased`)."""
        kept: list[str] = []
        for i, (_, kid) in enumerate(items):
            try:
                self.stores[node].release(kid)
            except KeyStoreBusyError as exc:  # the next ones would each wait the busy timeout too
                rest = [k for _, k in items[i:]]
                log.error("KME: could not release %d reservation(s) at node %s (%s); their bits stay reserved and "
                          "unused until the store can be written: %s", len(rest), node, exc, ", ".join(rest))
                kept += rest
                self._keep_unreleased(node, rest)
                break
            except (KeyStoreError, sqlite3.Error) as exc:
                why = storage_failure(exc)
                log.error("KME: could not release reservation %s at node %s (%s); its bits stay reserved and "
                          "unused%s", kid, node, exc, " until the store can be written" if why else "")
                kept.append(kid)
                if why:
                    self._keep_unreleased(node, [kid])
        return kept

    def _resync(self, pair: str, m: str, s: str, items: Sequence[tuple[list[Ref], str]]) -> int:
        """After the slave's store refused the master's next bits (``items``, released again at the
        master): spend at the master, without handing them out, the bits the slave's store already
        spent for good — consumed (longer ago than ``resync_settled_s``), exported or absent there
        (:meth:`KeyStore.spent_refs`; never bits reserved there: a live key) — so the next
        reservation moves past them (:meth:`KeyStore.discard_exact`, recorded ``discarded``).
        Returns the bits discarded at the master.

        Looked for in the refused request's bits and then on along the master's free bits in the order
        an enc_keys draws them (pool ``etsi``, then ``general``), up to the first bit the slave has not
        spent: one try passes over a whole spent range at the head (after an export of 4096 bits from the
        slave's store, each try of a request of 512-bit keys passed over only its own bits and the request
        answered 503; docs review s34 L17), and nothing beyond that head is touched (a first version
        looked in every free bit and discarded spent bits far beyond it, e.g. a parked export's that an
        import could still return; second review s34 F4)."""
        own = [r for rr, _ in items for r in rr]
        head: list[Ref] = []
        for pool in (ETSI_PURPOSE, GENERAL):
            ranges = [(bid, a, b - a) for bid, rs in self.stores[m].free_ranges(pair, [pool]).items() for a, b in rs]
            run, whole = self._spent_head(pair, s, ranges)
            head += run
            if not whole:
                break
        try:
            spent = merge_refs([self.stores[s].spent_refs(pair, own, settled_s=self.settings.resync_settled_s), head])
            if not spent:
                return 0
            n = self.stores[m].discard_exact(pair, spent, f"ETSI KME: already spent at the slave's store ({s}); "
                                                          "the two stores were out of step")
        except KeyStoreError as exc:
            log.error("KME: pair %s: could not bring the stores of %s and %s back in step: %s", pair, m, s, exc)
            return 0
        if n:
            log.warning("KME: pair %s out of step: %d bit(s) the master's store %s held next were already spent at the "
                        "slave's store %s (consumed, exported or absent there); discarded them at %s too, never handed "
                        "out", pair, n, m, s, m)
        return n

    def _spent_head(self, pair: str, s: str, ranges: list[Ref]) -> tuple[list[Ref], bool]:
        """The leading run of ``ranges`` (the master's free bits of one pool, in draw order) that the slave's
        store spent for good, and whether it covers them all."""
        try:
            spent = self.stores[s].spent_refs(pair, ranges, settled_s=self.settings.resync_settled_s)
        except KeyStoreError:
            return [], False
        by_block: dict[str, list[tuple[int, int]]] = {}
        for b, o, n in spent:
            by_block.setdefault(b, []).append((o, o + n))
        run: list[Ref] = []
        for bid, a, length in ranges:
            pos = a
            for lo, hi in sorted(by_block.get(bid, [])):
                if hi <= pos or lo >= a + length:
                    continue
                if lo > pos:
                    break
                pos = min(hi, a + length)
            if pos > a:
                run.append((bid, a, pos - a))
            if pos < a + length:
                return run, False
        return run, True

    def _take_at_both(self, pair: str, m: str, s: str, sizes: list[int], info: dict[str, Any]) -> list[KeyMaterial]:
        """Reserve the keys' bits at the master's store, the same bits at the slave's, and only then
        consume the master's: a refusal at either end consumes nothing, and no bit is read before
        both ends hold it for the key (caller holds the pair lock).  When the slave's store refused
        because some of those bits were already spent there for good, they are spent at the master
        too (:meth:`_resync`), or because a stopped KME left them reserved, they are released
        (:meth:`recover_interrupted_requests`), and the request is tried again with the following
        bits (at most :data:`RESYNC_ATTEMPTS` tries: a spent range that does not end where a request
        does takes two)."""
        for attempt in range(RESYNC_ATTEMPTS):
            items = self._reserve_at_master(pair, m, sizes, info)
            try:
                self.stores[s].reserve_exact_many(pair, items, ETSI_PURPOSE, info=info)
                break
            except KeyStoreBusyError as exc:
                kept = self._release(m, items)
                raise self._busy(s, exc, "no key was consumed" + _kept_note(kept, "at the master")) from None
            except (KeyStoreError, sqlite3.Error) as exc:
                kept = self._release(m, items)
                why = storage_failure(exc)
                if why:
                    raise self._unwritable(s, why, exc, "no key was consumed" + _kept_note(kept, "at the master")) \
                        from None
                if not kept and attempt < RESYNC_ATTEMPTS - 1 and (self._resync(pair, m, s, items)
                                                                   or self.recover_interrupted_requests()):
                    continue
                raise self._slave_refused(pair, s, items, exc, kept) from None
        busy: KeyStoreBusyError | None = None
        err: BaseException
        try:
            return self.stores[m].take_exact_many(pair, items, ETSI_PURPOSE)
        except KeyStoreBusyError as exc:
            busy, err = exc, exc
        except (KeyStoreError, sqlite3.Error) as exc:
            err = exc
        reason = str(err)
        # take_exact_many is one transaction: refused means nothing was read or consumed at the master
        kept = self._release(s, items)
        kept += self._release(m, [it for it in items if it[1] not in kept])
        if busy is not None:
            raise self._busy(m, busy, "no key was consumed" + _kept_note(kept))
        why = storage_failure(err)
        if why:
            raise self._unwritable(m, why, err, "no key was consumed" + _kept_note(kept))
        raise EtsiError(503, "key store error at the master's KME; no key was consumed" + _kept_note(kept),
                        [{"pair": pair, "reason": reason}])

    def _slave_refused(self, pair: str, s: str, items: Sequence[tuple[list[Ref], str]], exc: BaseException,
                       kept: list[str]) -> EtsiError:
        """The 503 for a slave's store that refused the bits the master's holds next, resync and recovery having
        found nothing to fix. When a pending reservation at the slave holds some of them (review s38 F2: two KMEs
        on one data dir, enc_keys in opposite directions, each picked the same next bits), the stores are in step
        and the answer says so: another key's request holds the bits; else they are out of step."""
        want = [r for rr, _ in items for r in rr]
        held = sorted({d["key_id"] for d in self.stores[s].pending_reservations() if d["pair"] == pair
                       and any(b == b2 and o < o2 + n2 and o2 < o + n for b, o, n in d["refs"] for b2, o2, n2 in want)})
        consumed = "no key was consumed" + _kept_note(kept, "at the master")
        details: dict[str, Any] = {"pair": pair, "reason": str(exc)}
        if held:
            log.warning("KME: slave store %s holds the bits of pair %s the master's store holds next reserved for "
                        "another key (%s); %s", s, pair, ", ".join(held), consumed)
            return EtsiError(503, f"the bits of this pair the master's store holds next are reserved at node {s}'s "
                                  "store for another key: a request being delivered now (by this or another KME on "
                                  "these stores, e.g. one in the opposite direction), or one a stopped KME left "
                                  f"(released when it is {self.settings.resync_settled_s:g} s old or a KME restarts); "
                                  f"the stores are in step: retry; {consumed}",
                             # how many, not their key IDs: those belong to the SAEs of those keys, which need not
                             # be the caller (review s38 K7); the IDs are in the KME's log above
                             [{**details, "held_by_requests": len(held)}])
        log.error("KME: slave store %s could not reserve %d key(s) of pair %s (%s); nothing was consumed",
                  s, len(items), pair, exc)
        return EtsiError(503, "the key stores of the two KMEs are out of step for this pair: the slave's store "
                              f"cannot reserve the bits the master's store holds next; {consumed}", [details])

    def _held_for_another_sae(self, kid: str, slave_sae: str) -> bool:
        """Whether some store of this KME (every node's) records key ``kid`` for a slave SAE other
        than ``slave_sae`` (or for no SAE: a key of another purpose).  Spec 5.3: such a caller gets
        401, whatever state the key is in and whoever its master is, so the answer tells an
        unrelated SAE no more than the spec's 401."""
        for store in self.stores.values():
            rec = store.delivery(kid)
            if rec is not None and rec["state"] != "released" and rec["info"].get("slave_SAE_ID") != slave_sae:
                return True
        return False

    # -- the three API calls

    def status(self, master_sae: str, slave_sae: str) -> dict[str, Any]:
        """Status data format (spec 6.1) for the calling master SAE and ``slave_sae``.

        The spec's optional ``status_extension`` object carries labqfl's vendor extension
        ``labqfl_provenance``: the provenance of the pair's key blocks in the master's store
        (:func:`labqfl.provenance.store_pair_provenance`: blocks by physical layer/randomness and
        what their security rests on)."""
        from labqfl.provenance import store_pair_provenance

        m, s = self._node(master_sae, "master_SAE_ID"), self._node(slave_sae, "slave_SAE_ID")
        pair = self._pair(m, s)
        st = self.settings
        stored = self._stored_keys(pair, m, s, st.key_size)
        return {"source_KME_ID": st.kme_id(m), "target_KME_ID": st.kme_id(s), "master_SAE_ID": master_sae,
                "slave_SAE_ID": slave_sae, "key_size": st.key_size, "stored_key_count": stored,
                "max_key_count": max(st.max_key_count, stored), "max_key_per_request": st.max_key_per_request,
                "max_key_size": st.max_key_size, "min_key_size": st.min_key_size, "max_SAE_ID_count": 0,
                "status_extension": {PROVENANCE_EXTENSION: store_pair_provenance(self.stores[m], pair)}}

    def enc_keys(self, master_sae: str, slave_sae: str, number: int | None = None, size: int | None = None,
                 additional_slave_sae_ids: Sequence[str] | None = None,
                 extension_mandatory: Sequence[Any] | None = None) -> dict[str, Any]:
        """Get key (spec 5.2): ``number`` keys of ``size`` bits for the master SAE."""
        st = self.settings
        number = 1 if number is None else number
        size = st.key_size if size is None else size
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= st.max_key_per_request:
            raise EtsiError(400, f"number must be an integer from 1 to max_key_per_request = {st.max_key_per_request}",
                            [{"parameter": "number", "value": _echo(number),
                              "expected": f"integer in [1, {st.max_key_per_request}]"}])
        if isinstance(size, bool) or not isinstance(size, int) or size % 8 or not st.min_key_size <= size <= st.max_key_size:
            raise EtsiError(400, f"size must be a multiple of 8 bits from min_key_size = {st.min_key_size} to "
                                 f"max_key_size = {st.max_key_size}",
                            [{"parameter": "size", "value": _echo(size),
                              "expected": f"multiple of 8 in [{st.min_key_size}, {st.max_key_size}]"}])
        if additional_slave_sae_ids:
            raise EtsiError(400, "key multicast is not supported (max_SAE_ID_count = 0)",
                            [{"parameter": "additional_slave_SAE_IDs", "max_SAE_ID_count": 0}])
        if extension_mandatory:
            names = [next(iter(e)) if isinstance(e, dict) and e else str(e) for e in extension_mandatory]
            raise EtsiError(400, "not supported extension_mandatory parameter(s)",
                            [{"extension_mandatory_unsupported": names}])
        m, s = self._node(master_sae, "master_SAE_ID"), self._node(slave_sae, "slave_SAE_ID")
        pair = self._pair(m, s)
        info: dict[str, Any] = {"master_SAE_ID": master_sae, "slave_SAE_ID": slave_sae}
        if self.instance_id is not None:
            info[INSTANCE_INFO] = self.instance_id
        if any(self._unreleased.values()):
            with self._recovery_lock:
                self._retry_unreleased()
        with self._lock(pair):
            available = self._stored_keys(pair, m, s, size)
            if available < number:
                raise EtsiError(503, "not enough key material for this request",
                                [{"pair": pair, "requested_keys": number, "size": size, "available_keys": available}])
            mats = self._take_at_both(pair, m, s, [size] * number, info)
        try:
            keys = [{"key_ID": k.key_id, "key": base64.b64encode(k.to_bytes()).decode("ascii")} for k in mats]
        finally:
            for k in mats:
                k.wipe()
        log.info("KME: enc_keys %s -> %s (pair %s): %d key(s) of %d bits, key IDs %s", master_sae, slave_sae, pair,
                 number, size, [k["key_ID"] for k in keys])
        return {"keys": keys}

    def dec_keys(self, slave_sae: str, master_sae: str, key_ids: Sequence[str]) -> dict[str, Any]:
        """Get key with key IDs (spec 5.3): the calling slave SAE retrieves keys by ID, once."""
        if not key_ids:
            raise EtsiError(400, "no key_ID given", [{"parameter": "key_IDs"}])
        if len(key_ids) > self.settings.max_key_per_request:
            raise EtsiError(400, f"at most max_key_per_request = {self.settings.max_key_per_request} key IDs per request")
        for kid in key_ids:
            try:
                if not isinstance(kid, str):
                    raise ValueError
                uuid.UUID(kid)
            except ValueError:
                what = "key_ID is null; expected a UUID string" if kid is None else "key_ID is not a UUID"  # s36 F11
                raise EtsiError(400, what, [{"key_ID": _echo_json_value(kid)}]) from None
        if len(set(key_ids)) != len(key_ids):
            raise EtsiError(400, "a key_ID appears more than once", [{"parameter": "key_IDs"}])
        s, m = self._node(slave_sae, "slave_SAE_ID"), self._node(master_sae, "master_SAE_ID")
        if s == m:
            raise EtsiError(400, f"master and slave SAE are both attached to node {s}; no QKD key links a node to itself")
        store = self.stores[s]
        by_pair: dict[str, list[tuple[list[Any], str]]] = {}
        for kid in key_ids:
            not_slave = EtsiError(401, "this SAE is not the slave SAE of the key", [{"key_ID": kid}])
            res = store.reservation(kid)
            if res is None:
                known = store.delivery(kid)
                if known is not None and known["state"] == "delivered" and known["info"].get("slave_SAE_ID") == slave_sae:
                    raise EtsiError(400, "key_ID was already retrieved", [{"key_ID": kid}])
                if self._held_for_another_sae(kid, slave_sae):
                    raise not_slave
                raise EtsiError(400, "key_ID is unknown to this KME for this SAE", [{"key_ID": kid}])
            pair, refs, purpose, info = res
            if info.get("slave_SAE_ID") != slave_sae:
                raise not_slave
            if info.get("master_SAE_ID") != master_sae:
                raise EtsiError(400, "key_ID was not requested by this master_SAE_ID", [{"key_ID": kid}])
            by_pair.setdefault(pair, []).append((refs, kid))
        got: dict[str, str] = {}
        for pair, items in by_pair.items():
            with self._lock(pair):
                try:
                    mats = store.take_exact_many(pair, items, ETSI_PURPOSE)
                except KeyStoreBusyError as exc:
                    raise self._busy(s, exc, "no key was retrieved; the key IDs stay valid") from None
                except (KeyStoreError, sqlite3.Error) as exc:
                    why = storage_failure(exc)
                    if why:
                        raise self._unwritable(s, why, exc, "no key was retrieved; the key IDs stay valid") from None
                    raise EtsiError(400, "key_ID could not be retrieved", [{"reason": str(exc)}]) from None
            try:
                for k in mats:
                    got[k.key_id] = base64.b64encode(k.to_bytes()).decode("ascii")
            finally:
                for k in mats:
                    k.wipe()
        log.info("KME: dec_keys %s <- %s (node %s): %d key(s), key IDs %s", slave_sae, master_sae, m, len(key_ids),
                 list(key_ids))
        return {"keys": [{"key_ID": kid, "key": got[kid]} for kid in key_ids]}


# ---------------------------------------------------------------------------------- HTTP layer


def peer_names(peercert: Mapping[str, Any] | None) -> list[str]:
    """Identities in a peer certificate (``ssl.SSLSocket.getpeercert()`` dict): subject CN
    first, then DNS and URI subjectAltNames."""
    if not peercert:
        return []
    names = [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]
    names += [v for k, v in peercert.get("subjectAltName", ()) if k in ("DNS", "URI")]
    return names


def create_app(service: KeyDeliveryService) -> FastAPI:
    """The FastAPI application of the KME.  The SAE is read from the TLS client certificate that
    :class:`MTLSH11Protocol` puts into ``scope["extensions"]["tls"]``."""
    app = FastAPI(title="labqfl KME (ETSI GS QKD 014 v1.1.1)", openapi_url=None, docs_url=None, redoc_url=None)

    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """JSON error bodies for every failure: EtsiError as-is, bad format 400, other HTTP errors, internal 503."""
    @app.exception_handler(EtsiError)
    async def _etsi_error(request: Request, exc: EtsiError) -> JSONResponse:
        log.info("KME: %s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
        try:
            return JSONResponse(exc.body(), status_code=exc.status)
        except (TypeError, ValueError):  # a detail that JSON cannot carry: still answer the error
            return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(KeyStoreBusyError)
    async def _busy_error(request: Request, exc: KeyStoreBusyError) -> JSONResponse:
        node = exc.node or Path(exc.path).stem
        log.warning("KME: %s %s -> 503: key store of node %s is busy", request.method, request.url.path, node)
        return JSONResponse({"message": f"key store of node {node} is busy (another process holds its write lock); "
                                        "retry later", "details": [{"node": node, "reason": str(exc)}]},
                            status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": "bad request format", "details": [{"errors": str(exc.errors())[:500]}]},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("KME: internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"message": "internal error of the KME", "details": [{"type": type(exc).__name__}]},
                            status_code=503)


def _caller(service: KeyDeliveryService, request: Request) -> str:
    """The SAE named by the request's TLS client certificate (401 if none is known to this KME)."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    names = peer_names(tls.get("peercert"))
    known = list(dict.fromkeys(n for n in names if n in service.settings.saes))
    if len(known) > 1:  # review s33 F7: its holder could act as either SAE, by the order of its names
        raise EtsiError(401, "unauthorized: the client certificate names more than one SAE known to this KME ("
                             + ", ".join(repr(n[:64]) for n in known[:4]) + "); expected a certificate naming one SAE "
                             "(CN and subjectAltNames)", [{"certificate_names": names[:4]}])
    if known:
        return known[0]
    raise EtsiError(401, "unauthorized: the client certificate does not name an SAE known to this KME",
                    [{"certificate_names": names[:4]}])


#: The fields of ETSI GS QKD 014 v1.1.1's "Key request" (§6.2, enc_keys) and "Key IDs" (§6.4, dec_keys)
#: data formats. A field outside them is refused: a client that posts a dec_keys body (``key_IDs``) to
#: enc_keys by mistake would otherwise be handed, and spend, fresh key.
ENC_KEYS_FIELDS = ("number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional")
DEC_KEYS_FIELDS = ("key_IDs", "key_IDs_extension")


class _RepeatedMember(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name[:64]


def _no_repeated_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a member name given twice (which ``json`` would silently resolve
    to the last value) raises :class:`_RepeatedMember`."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _RepeatedMember(k)
        out[k] = v
    return out


#: Bytes allowed per key ID in a dec_keys body (§6.4 item ``{"key_ID": "<36-char UUID>", "key_ID_extension":
#: {...}}``, with whitespace and a modest extension), and for the rest of any request body.
BODY_BYTES_PER_KEY_ID = 1024
BODY_BYTES_BASE = 16384


def _echo_json_value(v: Any) -> Any:
    """A request value as the error details echo it: as JSON had it (a null stays null, not the string "None" of
    Python's str(); review s36 input F11), a string cut to 64 characters, a list, object or float by its JSON
    type name only."""
    if isinstance(v, str):
        return v[:64]
    if v is None or isinstance(v, bool) or (isinstance(v, int) and abs(v) < 2**53):
        return v
    return "(an array)" if isinstance(v, list) else "(an object)" if isinstance(v, dict) else "(a number)"


def max_body_bytes(settings: KmeSettings) -> int:
    """The largest request body the KME reads: the largest legal one (a dec_keys of
    ``max_key_per_request`` key IDs; an enc_keys Key request is far smaller) with margin.  With the
    defaults (128 key IDs) 144 KiB; a body beyond it gets 413 (review s33 F8: no limit, 300 MiB read)."""
    return BODY_BYTES_BASE + settings.max_key_per_request * BODY_BYTES_PER_KEY_ID


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes: at once on a larger Content-Length,
    else as soon as the bytes received pass it (never read or buffered in full)."""
    too_big = EtsiError(413, f"request body larger than {limit} bytes; the largest legal request (ETSI GS QKD 014 "
                             f"§6.2, §6.4, with max_key_per_request key IDs) is far smaller",
                        [{"max_body_bytes": limit}])
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
        raise too_big
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise too_big
    return bytes(buf)


async def _json_body(request: Request, fields: Sequence[str], limit: int) -> dict[str, Any]:
    """The request body (at most ``limit`` bytes) as a JSON object ({} when empty) holding only
    ``fields``; 400 otherwise, 413 beyond the limit."""
    raw = await _read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, object_pairs_hook=_no_repeated_members)
    except _RepeatedMember as exc:
        raise EtsiError(400, f"field {exc.name!r} appears more than once in a JSON object of the request body; "
                             "expected each field at most once", [{"parameter": exc.name}]) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EtsiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise EtsiError(400, "request body must be a JSON object")
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise EtsiError(400, f"unknown field(s) {', '.join(map(repr, unknown))} in the request body; expected "
                             f"{', '.join(fields)}", [{"parameter": k} for k in unknown[:8]])
    return data


_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
#: The query parameters of the spec's GET forms (§5.1 status: none; §5.2 enc_keys; §5.3 dec_keys).
STATUS_QUERY: tuple[str, ...] = ()
ENC_KEYS_QUERY = ("number", "size")
DEC_KEYS_QUERY = ("key_ID",)


def _only_query(request: Request, allowed: Sequence[str]) -> None:
    """400 naming every query parameter outside ``allowed``: a request meant for another form
    (``?key_ID=`` on enc_keys, ``?additional_slave_SAE_IDs=`` asking for multicast, a misspelt
    ``?numbr=``) must not be answered as if it had not been given, spending fresh key."""
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in allowed]
    if unknown:
        raise EtsiError(400, f"unknown query parameter(s) {', '.join(repr(k[:64]) for k in unknown[:8])}; expected "
                             + (", ".join(allowed) if allowed else "none"),
                        [{"parameter": k[:64]} for k in unknown[:8]])


def _no_query_on_post(request: Request) -> None:
    """400 for a POST with query parameters: ETSI GS QKD 014 §5.2/§5.3 (and §6.2/§6.4) carry a POST's
    parameters in its JSON body; a query was ignored and fresh key spent (review s33 F6:
    ``POST …/enc_keys?number=5&size=64`` returned one 256-bit key, ``?additional_slave_SAE_IDs=`` a key)."""
    names = list(dict.fromkeys(request.query_params.keys()))
    if names or request.url.query:
        raise EtsiError(400, "query parameters on a POST request (" + (", ".join(repr(k[:64]) for k in names[:8])
                             or repr(request.url.query[:64])) + "); a POST carries its parameters in the JSON body "
                             "(ETSI GS QKD 014 §5.2, §5.3), or use the GET form with query parameters",
                        [{"parameter": k[:64]} for k in names[:8]])


#: The members of a dec_keys ``key_IDs`` item (ETSI GS QKD 014 §6.4).
KEY_ID_ITEM_FIELDS = ("key_ID", "key_ID_extension")


def _key_id_items(body: Mapping[str, Any]) -> list[Any]:
    """The key IDs of a dec_keys body's ``key_IDs`` array; 400 unless it is a non-empty array of
    objects with a ``key_ID`` and no member outside §6.4 (``key_ID``, ``key_ID_extension``)."""
    items = body.get("key_IDs")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and "key_ID" in i for i in items):
        raise EtsiError(400, "key_IDs must be a non-empty array of {\"key_ID\": ...} objects")
    unknown = list(dict.fromkeys(k for i in items for k in i if k not in KEY_ID_ITEM_FIELDS))
    if unknown:
        raise EtsiError(400, f"unknown member(s) {', '.join(repr(k[:64]) for k in unknown[:8])} in a key_IDs item; "
                             "expected key_ID and optionally key_ID_extension (ETSI GS QKD 014 §6.4)",
                        [{"parameter": k[:64]} for k in unknown[:8]])
    ext = [i["key_ID_extension"] for i in items if "key_ID_extension" in i]
    if not all(isinstance(e, dict) for e in ext):
        raise EtsiError(400, "key_ID_extension must be an object (ETSI GS QKD 014 §6.4)",
                        [{"parameter": "key_ID_extension"}])
    return [i["key_ID"] for i in items]


def _objects(body: Mapping[str, Any], name: str) -> list[Any] | None:
    """Body field ``name`` that the spec defines as an array of objects (§6.2 extension_mandatory,
    extension_optional: name/value pairs); 400 when it is anything else."""
    v = body.get(name)
    if v is not None and (not isinstance(v, list) or not all(isinstance(e, dict) for e in v)):
        raise EtsiError(400, f"{name} must be an array of objects", [{"parameter": name, "value": _echo(v)}])
    return v


def _int_query(request: Request, name: str) -> int | None:
    """Integer query parameter ``name`` (None when absent); 400 when not a decimal integer or
    given more than once (``?number=1&number=2`` must not silently mean 2)."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise EtsiError(400, f"query parameter {name!r} is given {len(values)} times; expected it at most once",
                        [{"parameter": name, "values": [v[:32] for v in values[:8]]}])
    v = values[0]
    if not _INT_RE.fullmatch(v):
        raise EtsiError(400, f"{name} must be a decimal integer", [{"parameter": name, "value": v[:32]}])
    return int(v)


def _add_routes(app: FastAPI, service: KeyDeliveryService) -> None:
    """The five ETSI GS QKD 014 endpoints: status, enc_keys (GET/POST), dec_keys (GET/POST)."""
    @app.get(API_PREFIX + "/{slave_SAE_ID}/status")
    async def get_status(slave_SAE_ID: str, request: Request) -> JSONResponse:  # noqa: N803 (spec name)
        me = _caller(service, request)
        _only_query(request, STATUS_QUERY)
        return JSONResponse(await run_in_threadpool(service.status, me, slave_SAE_ID))

    @app.get(API_PREFIX + "/{slave_SAE_ID}/enc_keys")
    async def get_enc_keys(slave_SAE_ID: str, request: Request) -> JSONResponse:  # noqa: N803
        me = _caller(service, request)
        _only_query(request, ENC_KEYS_QUERY)
        out = await run_in_threadpool(service.enc_keys, me, slave_SAE_ID, _int_query(request, "number"),
                                      _int_query(request, "size"))
        return JSONResponse(out)

    limit = max_body_bytes(service.settings)

    @app.post(API_PREFIX + "/{slave_SAE_ID}/enc_keys")
    async def post_enc_keys(slave_SAE_ID: str, request: Request) -> JSONResponse:  # noqa: N803
        me = _caller(service, request)
        _no_query_on_post(request)
        body = await _json_body(request, ENC_KEYS_FIELDS, limit)
        extra = body.get("additional_slave_SAE_IDs")
        if extra is not None and (not isinstance(extra, list) or not all(isinstance(x, str) for x in extra)):
            raise EtsiError(400, "additional_slave_SAE_IDs must be an array of strings")
        ext = _objects(body, "extension_mandatory")
        _objects(body, "extension_optional")  # optional extensions may be ignored, but only well-formed ones
        out = await run_in_threadpool(service.enc_keys, me, slave_SAE_ID, body.get("number"), body.get("size"),
                                      extra, ext)
        return JSONResponse(out)

    @app.get(API_PREFIX + "/{master_SAE_ID}/dec_keys")
    async def get_dec_keys(master_SAE_ID: str, request: Request) -> JSONResponse:  # noqa: N803
        me = _caller(service, request)
        _only_query(request, DEC_KEYS_QUERY)
        ids = request.query_params.getlist("key_ID")
        return JSONResponse(await run_in_threadpool(service.dec_keys, me, master_SAE_ID, ids))

    @app.post(API_PREFIX + "/{master_SAE_ID}/dec_keys")
    async def post_dec_keys(master_SAE_ID: str, request: Request) -> JSONResponse:  # noqa: N803
        me = _caller(service, request)
        _no_query_on_post(request)
        body = await _json_body(request, DEC_KEYS_FIELDS, limit)
        ids = _key_id_items(body)
        return JSONResponse(await run_in_threadpool(service.dec_keys, me, master_SAE_ID, ids))


def _mtls_protocol_class() -> type:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class MTLSH11Protocol(H11Protocol):  # type: ignore[misc]
        """uvicorn's h11 protocol that hands the verified TLS client certificate to the app
        (ASGI TLS extension: ``scope["extensions"]["tls"]["peercert"]``)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            peercert = ssl_object.getpeercert() if ssl_object is not None else None
            inner = self.app

            async def app_with_cert(scope: dict[str, Any], receive: Any, send: Any) -> None:
                if scope.get("type") in ("http", "websocket"):
                    scope.setdefault("extensions", {})["tls"] = {"peercert": peercert}
                await inner(scope, receive, send)

            self.app = app_with_cert

    return MTLSH11Protocol


def server_ssl_context(certfile: Path, keyfile: Path, cafile: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2 server context that requires a client certificate signed by ``cafile``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(certfile), str(keyfile))
    ctx.load_verify_locations(str(cafile))
    return ctx


def _warn_without_kme_identity(certfile: Path) -> None:
    """Log a WARNING when the server certificate carries no KME identity (URI SAN
    ``urn:labqfl:kme:<name>``): SAEs that check it, as docs/keystore.md asks, will refuse this KME."""
    from cryptography import x509

    from labqfl.keystore.certs import KME_URI_PREFIX, cert_uris

    try:
        uris = cert_uris(x509.load_pem_x509_certificate(certfile.read_bytes()))
    except (ValueError, OSError):
        return
    if not any(u.startswith(KME_URI_PREFIX) for u in uris):
        log.warning("KME certificate %s carries no KME identity (URI subjectAltName %s<name>): it may be a node's "
                    "certificate, and SAEs that check the KME's identity will refuse it; issue one with `labqfl keys "
                    "certs DIR --kme NAME`", certfile, KME_URI_PREFIX)


class _KmeIdentity:
    """Mixin for the TLS objects of :func:`kme_client_context`: after the handshake (CA, validity,
    serverAuth and host name already verified by OpenSSL), the server certificate must also carry
    the KME identity the context expects, or the connection fails with an ``SSLCertVerificationError``."""

    def _check_kme_identity(self) -> None:
        want = getattr(self.context, "kme_uri", None)  # type: ignore[attr-defined]
        cert = self.getpeercert()  # type: ignore[attr-defined]
        uris = [v for k, v in (cert or {}).get("subjectAltName", ()) if k == "URI"]
        if want not in uris:
            raise ssl.SSLCertVerificationError(
                f"the server's certificate is not the KME's: it carries no URI subjectAltName {want!r} "
                f"(its URIs: {uris or 'none'}); it may be another node's certificate from the same CA")


class _KmeSSLSocket(_KmeIdentity, ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        self._check_kme_identity()


class _KmeSSLObject(_KmeIdentity, ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        self._check_kme_identity()


def kme_client_context(cafile: Path, certfile: Path | None = None, keyfile: Path | None = None, *,
                       kme: str = "kme") -> ssl.SSLContext:
    """TLS ≥ 1.2 client context for an SAE talking to this KME: trusts ``cafile``, presents the SAE
    certificate ``certfile``/``keyfile``, checks the host name as usual **and** requires the server
    certificate to carry the KME identity ``urn:labqfl:kme:<kme>`` (URI subjectAltName,
    :func:`labqfl.keystore.certs.kme_uri`).  CA + host name alone also accept every serving node's
    certificate of the same CA (they name localhost/127.0.0.1 by default).  Works with
    ``ssl``/``http.client``/``urllib``, ``requests`` (through an adapter) and ``httpx`` (``verify=``)."""
    from labqfl.keystore.certs import kme_uri

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(str(cafile))
    if certfile is not None:
        ctx.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    ctx.kme_uri = kme_uri(kme)  # type: ignore[attr-defined]
    ctx.sslsocket_class = _KmeSSLSocket
    ctx.sslobject_class = _KmeSSLObject
    return ctx


def build_server(service: KeyDeliveryService, *, host: str, port: int, certfile: Path, keyfile: Path,
                 cafile: Path) -> Any:
    """A ``uvicorn.Server`` for the KME with mutual TLS (``ssl.CERT_REQUIRED``)."""
    import uvicorn

    from labqfl.keystore.certs import check_private_key_file

    for label, p in (("--cert", certfile), ("--key", keyfile), ("--ca", cafile)):
        if not Path(p).is_file():
            raise ConfigError(f"{label} {p}: no such file")
    check_private_key_file(Path(keyfile), "KME private key (--key)")
    try:
        server_ssl_context(certfile, keyfile, cafile)  # fail early with a clear message
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load KME TLS files (cert {certfile}, key {keyfile}, CA {cafile}): {exc}") from None
    _warn_without_kme_identity(Path(certfile))
    config = uvicorn.Config(create_app(service), host=host, port=port, ssl_certfile=str(certfile),
                            ssl_keyfile=str(keyfile), ssl_ca_certs=str(cafile), ssl_cert_reqs=ssl.CERT_REQUIRED,
                            http=_mtls_protocol_class(), ws="none", lifespan="off", log_config=None,
                            access_log=False, timeout_keep_alive=30)
    return uvicorn.Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` with ``TCP_NODELAY`` (inherited by accepted
    connections; without it uvicorn's separate header/body writes meet the peer's delayed ACK
    and every response waits ~40 ms)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


class KmeServerThread:
    """Run the KME in a background thread on ``host`` (port 0 = any free port); for tests,
    benchmarks and embedding.  Use as a context manager; ``.port`` and ``.base_url`` once started."""

    def __init__(self, service: KeyDeliveryService, *, certfile: Path, keyfile: Path, cafile: Path,
                 host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._sock = bind_socket(host, port)
        self.port = int(self._sock.getsockname()[1])
        self.server = build_server(service, host=host, port=self.port, certfile=certfile, keyfile=keyfile,
                                   cafile=cafile)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="labqfl-kme", daemon=True)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> KmeServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"KME server on {self.host}:{self.port} did not start within {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> KmeServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
