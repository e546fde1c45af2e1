"""Where a key came from, and what its security rests on (issue 16, deliverable 5).

Every key block distilled by :class:`labqfl.qkd.pipeline.Distiller` carries a :class:`Provenance`
in its key-store metadata (``meta["provenance"]``):

* ``physical_layer``: ``"hardware"`` when every instrument role of the station is a real driver on a real
  instrument, ``"simulated"`` as soon as one role is simulated or emulated (:func:`station_physical_layer`):
  a simulated optical layer is the simulator's own Monte Carlo, which sees every photon;
* ``randomness``: the source of the clients' modulation choices, ``"qrng"`` | ``"csprng"`` |
  ``"seeded"``; a pair's block takes the *weakest* of its two clients (:func:`weakest_randomness`);
* ``protocol``: the protocol and proof the key length was computed with (:data:`PROTOCOL`);
* ``eps_sec``, ``eps_cor``, ``eps_auth``, ``eps_total``: the block's ε terms (docs/protocol.md
  §5, (P8)–(P9));
* ``intensity_rel_uncertainty``: the δ its analysis allowed every μ_k (None: none declared; below).

:func:`security_statement` says in one line what the key's security rests on, and
:func:`is_information_theoretic` is true only for a hardware physical layer with QRNG randomness at
both clients and a declared intensity calibration uncertainty (below). Every output that describes keys (``labqfl keys status``, ``metrics.json``,
``report.html``, the GUI's key-pool panel, the ETSI 014 status extension, training metrics) uses
these two functions, so no output calls a key information-theoretically secure otherwise.

The order of strength (weakest first) used to summarise many blocks (:func:`weakest`):

1. ``seeded`` randomness (any physical layer): not secret, the choices derive from the public seed;
2. ``simulated`` physical layer: no physical security;
3. ``hardware`` with ``csprng``: computational (the CSPRNG must be unpredictable);
4. ``hardware`` with ``qrng``, analysed with the declared μ_k taken as exact (no intensity uncertainty declared);
5. ``hardware`` with ``qrng`` and a declared intensity uncertainty δ > 0: information-theoretic under the assumptions of
   docs/protocol.md §7.

The intensities (review s36 H1, s36 lab2 M4, s36 physics F2). The decoy-state bounds take each client's mean
photon numbers μ_k from the station file; labqfl at most sets a client's VOA to the attenuation the station file
gives (the N7764A driver writes and reads back ``options.attenuation_db``) and measures no μ_k on hardware. A
station declares how well it knows them with ``clients.intensity_rel_uncertainty`` δ, and the analysis then
holds for every μ within ±δ (docs/protocol.md (P10)); the block records the δ it was analysed with
(``intensity_rel_uncertainty``; None: not both clients of the pair declare δ > 0). So the machine-readable flag is
honest: ``information_theoretic`` is true only for hardware, QRNG **and** a declared δ > 0 (δ = 0 is the exact-μ
analysis), "information-theoretically secure if :data:`IT_CONDITION` (±δ)" (``information_theoretic_condition``
with the block's δ, :func:`it_condition`; None when the flag is false; a summary names its weakest block's, the
smallest δ among information-theoretic blocks); a hardware/QRNG block
without one says the claim is withheld and why (:data:`NO_BAND`). Every ``hardware`` statement ends with
:data:`INTENSITY_CAVEAT`. A block stored before the field existed reads as none declared: the stored claim was
never backed by a band, so it is no longer called information-theoretic.

The authentication secret (review s33 M5). A pair's first block is authenticated (Wegman–Carter) with a
pre-shared secret, every later one with key refilled from earlier blocks, so every key of the pair rests on
that first secret too. A pair's pre-shared blocks (``meta.kind = "preshared-auth"``) say where it came from:
``meta.simulated`` true (or absent) — the distiller's bootstrap or a launcher's delivery, a secret labqfl
generated on this machine and wrote into both stores (:data:`AUTH_BOOTSTRAP`); false with ``meta.randomness``
``csprng`` — drawn by ``labqfl node preshare`` from the OS CSPRNG and carried out of band
(:data:`AUTH_CSPRNG`). Either makes the pair's keys at most computational (:func:`auth_secret_caveat`):
:func:`summarize_blocks` appends the caveat to the statement and never calls such a pair
information-theoretic, whatever its blocks' physical layer and randomness. Only a secret loaded by an
operator (``labqfl keys preshare``, ``simulated: false``, no randomness of labqfl's) is no caveat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

PHYSICAL_LAYERS = ("simulated", "hardware")
RANDOMNESS_SOURCES = ("qrng", "csprng", "seeded")
#: the protocol and proof of every labqfl key block
PROTOCOL = "four-phase TF-type, decoy, finite-key (labqfl docs/protocol.md)"
#: the clients' CSPRNG (labqfl.sim_backends.qrng.CsprngChoiceLog), named in the statements
CSPRNG_DESCRIPTION = "AES-256-CTR keyed with 256 bits from the OS CSPRNG"
#: the phrase reserved for hardware + QRNG keys; tests grep every other output for it
IT_PHRASE = "information-theoretically secure"
#: The condition of the information-theoretic claim while labqfl does not measure the intensities (review s36
#: lab2 M4); ``information_theoretic_condition`` of :meth:`Provenance.as_dict` and :func:`summarize_blocks`.
#: :func:`it_condition` adds the block's δ (review s37 physics F3).
IT_CONDITION = ("each true mean photon number lies within the declared calibration uncertainty "
                "(intensity_rel_uncertainty) of the declared μ_k")
#: What a hardware/QRNG block without a band (δ > 0 declared by both clients of its pair) says instead of the
#: claim. The analysis itself used the station's largest declared δ for every pair (exact μ_k only where no client
#: declares one, or all declare 0): the claim is withheld because no declaration bounds this pair's μ_k (review
#: s37 physics F2, F5).
NO_BAND = ("claim withheld: not both clients of this pair declare an intensity calibration band "
           "(clients.intensity_rel_uncertainty > 0), so nothing declared bounds their true μ_k (the analysis used the "
           "station's largest declared δ, and took the declared μ_k as exact where no client declares one above 0: "
           "an error in μ then goes straight into the key, docs/protocol.md §7 item 5)")
#: What every hardware key's statement adds until labqfl measures the intensities on hardware (review s36 H1,
#: lab2 M4): the decoy-state analysis takes each client's μ_k from the station file as exact (docs/protocol.md
#: §7); labqfl at most sets a VOA to the attenuation the station file gives (drivers/keysight_n7764a.py:
#: ``options.attenuation_db``, written and read back) and measures no μ_k at a client's output. Derived from
#: ``physical_layer``, never stored: blocks distilled before (and after) read the same.
INTENSITY_CAVEAT = ("μ_k are not measured by labqfl: it at most sets a client's VOA to the attenuation the station "
                    "file gives (the N7764A driver: options.attenuation_db, read back), and the decoy-state analysis "
                    "takes the station file's μ_k as exact (docs/protocol.md §7)")

_RANDOMNESS_RANK = {"seeded": 0, "csprng": 1, "qrng": 2}
_EPS_FIELDS = ("eps_sec", "eps_cor", "eps_auth", "eps_total")


@dataclass(frozen=True)
class Provenance:
    """Origin of a key block (module docstring). ε fields are probabilities, None when unknown."""

    physical_layer: str
    randomness: str
    protocol: str = PROTOCOL
    eps_sec: float | None = None
    eps_cor: float | None = None
    eps_auth: float | None = None
    eps_total: float | None = None
    #: δ the block's analysis allowed each μ_k (the station's declared intensity_rel_uncertainty); None: none declared
    intensity_rel_uncertainty: float | None = None

    def __post_init__(self) -> None:
        if self.physical_layer not in PHYSICAL_LAYERS:
            raise ValueError(f"provenance physical_layer must be one of {PHYSICAL_LAYERS}, got {self.physical_layer!r}")
        if self.randomness not in RANDOMNESS_SOURCES:
            raise ValueError(f"provenance randomness must be one of {RANDOMNESS_SOURCES}, got {self.randomness!r}")
        for name in _EPS_FIELDS:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0):
                raise ValueError(f"provenance {name} must be a probability in [0, 1] or None, got {v!r}")
        d = self.intensity_rel_uncertainty
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= float(d) < 1.0):
            raise ValueError(f"provenance intensity_rel_uncertainty must be in [0, 1) or None, got {d!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the statement, the information-theoretic flag and its condition alongside."""
        it = is_information_theoretic(self)
        return {**asdict(self), "security": security_statement(self), "information_theoretic": it,
                "information_theoretic_condition": it_condition(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        """Read :meth:`as_dict` output back (derived fields ignored); ValueError names a bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"provenance must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("physical_layer", "randomness") if k not in d]
        if missing:
            raise ValueError(f"provenance lacks field(s) {missing}; expected physical_layer and randomness")
        return cls(physical_layer=str(d["physical_layer"]), randomness=str(d["randomness"]),
                   protocol=str(d.get("protocol", PROTOCOL)),
                   **{k: (None if d.get(k) is None else float(d[k])) for k in (*_EPS_FIELDS, "intensity_rel_uncertainty")})

    @property
    def label(self) -> str:
        """Short label, e.g. ``"simulated/csprng"``."""
        return f"{self.physical_layer}/{self.randomness}"


def has_band(prov: Provenance) -> bool:
    """Whether the block's analysis allowed a declared band δ > 0 around each μ_k. δ = 0 declared is the exact-μ
    analysis, bit for bit, and earns no more than no declaration (review s37 physics F2)."""
    return prov.intensity_rel_uncertainty is not None and prov.intensity_rel_uncertainty > 0.0


def is_information_theoretic(prov: Provenance) -> bool:
    """True only for a hardware physical layer with QRNG randomness at both clients, analysed with a declared
    intensity calibration band δ > 0 (module docstring, :func:`has_band`)."""
    return prov.physical_layer == "hardware" and prov.randomness == "qrng" and has_band(prov)


def it_condition(prov: Provenance) -> str | None:
    """``information_theoretic_condition`` of an information-theoretic block: :data:`IT_CONDITION` with its δ,
    e.g. "… of the declared μ_k (±0.05)"; None for any other block."""
    if not is_information_theoretic(prov):
        return None
    return f"{IT_CONDITION} (±{prov.intensity_rel_uncertainty:.3g})"


def _eps(prov: Provenance) -> str:
    return f" (ε_total = {prov.eps_total:.1e} per block)" if prov.eps_total is not None else ""


def security_statement(prov: Provenance) -> str:
    """One line: what the security of keys with this provenance rests on (module docstring); a hardware
    key's line ends with :data:`INTENSITY_CAVEAT`, and the information-theoretic claim holds only if
    :data:`IT_CONDITION`."""
    if prov.randomness == "seeded":
        channel = "; the quantum channel was simulated too" if prov.physical_layer == "simulated" else ""
        return ("not secret: the clients' choices derive from the public seed (station file and acquisition "
                f"epoch), so anyone can predict the key{channel}; for tests and benchmarks only{_intensities(prov)}")
    if prov.physical_layer == "simulated":
        return ("no physical security: the quantum channel was simulated (the simulator sees every photon); "
                f"keys are for testing ({prov.randomness} client randomness)")
    if prov.randomness == "csprng":
        return (f"computational: rests on the clients' CSPRNG ({CSPRNG_DESCRIPTION}) being unpredictable, "
                f"then on the QKD analysis of docs/protocol.md under its §7 assumptions{_eps(prov)}{_intensities(prov)}")
    if not has_band(prov):
        return (f"{NO_BAND}; hardware physical layer, QRNG randomness, {prov.protocol} under the assumptions of "
                f"docs/protocol.md §7{_eps(prov)}{_intensities(prov)}")
    return (f"{IT_PHRASE} if {it_condition(prov)}, under the assumptions of "
            f"docs/protocol.md §7{_eps(prov)}{_intensities(prov)}")


def _intensities(prov: Provenance) -> str:
    """``"; " + INTENSITY_CAVEAT`` for a hardware physical layer, else nothing."""
    return f"; {INTENSITY_CAVEAT}" if prov.physical_layer == "hardware" else ""


def _rank(prov: Provenance) -> int:
    """0 = weakest (seeded) … 4 = information-theoretic (module docstring); a hardware/QRNG block without a
    declared intensity uncertainty (3) is weaker than one with it."""
    if prov.randomness == "seeded":
        return 0
    if prov.physical_layer == "simulated":
        return 1
    return 1 + _RANDOMNESS_RANK[prov.randomness] + (prov.randomness == "qrng" and has_band(prov))


def _strength(prov: Provenance) -> tuple[int, float, float]:
    """Sort key, weakest first: :func:`_rank`; among information-theoretic blocks the **smallest** δ (its claim
    needs every μ_k within ±δ, the hardest condition to meet: review s37 physics F3); then the largest ε_total."""
    band = float(prov.intensity_rel_uncertainty or 0.0) if is_information_theoretic(prov) else 0.0
    return (_rank(prov), band, -(prov.eps_total if prov.eps_total is not None else 1.0))


def weakest_randomness(*sources: str) -> str:
    """The weakest of the given randomness sources (seeded < csprng < qrng)."""
    if not sources:
        raise ValueError("weakest_randomness needs at least one source")
    bad = [s for s in sources if s not in _RANDOMNESS_RANK]
    if bad:
        raise ValueError(f"unknown randomness source(s) {bad}; expected one of {RANDOMNESS_SOURCES}")
    return min(sources, key=_RANDOMNESS_RANK.__getitem__)


def weakest(provs: Iterable[Provenance]) -> Provenance | None:
    """The weakest provenance (:func:`_strength`: lowest rank; among information-theoretic blocks the smallest δ;
    then the largest ε_total); None if empty. The first of equals."""
    best: Provenance | None = None
    for p in provs:
        if best is None or _strength(p) < _strength(best):
            best = p
    return best


# -- from the station and the clients' logs -------------------------------------------------------
def station_physical_layer(cfg: Any) -> str:
    """``"simulated"`` if any instrument role of the station config is simulated (``driver = "sim"``) or
    emulated — a pyvisa-sim device (``visa_library`` ``@sim:<file>`` or ``<file>@sim``), the emulated pattern
    generators, time tagger or detectors of ``simulation.emulate_*`` (the light is then the simulated loop's) — else
    ``"hardware"``. Real drivers on emulators stay "simulated": the keys' security never rests on them."""
    roles = cfg.roles()
    sim = getattr(cfg, "simulation", None)
    emulated = any(bool(getattr(sim, f"emulate_{what}", False))
                   for what in ("pattern_generators", "time_tagger", "detectors"))

    def pyvisa_sim(ic: Any) -> bool:
        lib = str(getattr(ic, "visa_library", None) or "")
        return lib.startswith("@sim") or lib.endswith("@sim")

    fake = any(ic.simulated or pyvisa_sim(ic) for ic in roles.values())
    return "simulated" if not roles or fake or emulated else "hardware"


def client_randomness(cfg: Any, client: str, log: Any = None) -> str:
    """Randomness source of ``client``: its modulation log's ``randomness`` attribute, else its
    station config field ``randomness``, else ``"seeded"`` (the counter-based SplitMix64 stream of
    :mod:`labqfl.sim_backends.qrng`, the only generator of stations without that field)."""
    src = getattr(log, "randomness", None)
    if src is None:
        src = getattr(cfg.client(client), "randomness", "seeded")
    src = str(src)
    if src not in _RANDOMNESS_RANK:
        raise ValueError(f"client {client!r}: unknown randomness source {src!r}; expected one of {RANDOMNESS_SOURCES}")
    return src


def pair_provenance(cfg: Any, pair: tuple[str, str], logs: Mapping[str, Any] | None = None, *,
                    eps_sec: float | None = None, eps_cor: float | None = None, eps_auth: float | None = None,
                    eps_total: float | None = None) -> Provenance:
    """Provenance of a key block of ``pair`` = (Ci, Cj) from the station config and the clients' logs. Its
    ``intensity_rel_uncertainty`` is the δ the distiller analyses every pair with (the station's largest declared,
    :meth:`labqfl.config.StationConfig.intensity_rel_uncertainty`) when both clients of the pair declare one above 0,
    else None (:data:`NO_BAND`: the analysis still used the station's largest δ, but nothing declared bounds this
    pair's μ_k)."""
    logs = logs or {}
    a, b = pair
    declared = all((getattr(cfg.client(c), "intensity_rel_uncertainty", None) or 0.0) > 0.0 for c in pair)
    band = float(cfg.intensity_rel_uncertainty()) if declared else None
    return Provenance(physical_layer=station_physical_layer(cfg),
                      randomness=weakest_randomness(client_randomness(cfg, a, logs.get(a)),
                                                    client_randomness(cfg, b, logs.get(b))),
                      eps_sec=eps_sec, eps_cor=eps_cor, eps_auth=eps_auth, eps_total=eps_total,
                      intensity_rel_uncertainty=band)


# -- summaries over key-store blocks ---------------------------------------------------------------
PRESHARED_KIND = "preshared-auth"
#: ``meta.kind`` of the auth-pool row a distilled block's authentication refill is stored as (one per
#: distilled block, block ID ``<key block>-auth``; labqfl.qkd.pipeline.AUTH_REFILL_SUFFIX): not a block of its own
AUTH_REFILL_KIND = "auth-refill"
#: block-metadata field of an imported block: the origin of the source store's pre-shared secrets of the pair
#: (labqfl.keystore.store.AUTH_ORIGIN_FIELD, written by an export), caveated as this store's own (review s38 F1)
AUTH_ORIGIN_FIELD = "auth_secret_origin"
#: the caveat of a pair whose authentication started from a secret labqfl generated itself (module docstring)
AUTH_BOOTSTRAP = ("authentication bootstrapped from a secret labqfl generated on this machine; both stores hold it "
                  "(simulated out-of-band delivery: whoever read it could have forged the first block's tags, "
                  "and so every key of the pair after it)")
#: the caveat of a pair whose pre-shared secret labqfl drew from the OS CSPRNG (``labqfl node preshare``)
AUTH_CSPRNG = ("authentication started from a pre-shared secret labqfl drew from the OS CSPRNG (labqfl node "
               "preshare): the tags, and so every key of the pair, rest on that generator being unpredictable")


def _meta(row: Any) -> Mapping[str, Any]:
    meta = row.get("meta", row) if isinstance(row, Mapping) else {}
    return meta if isinstance(meta, Mapping) else {}


def auth_secret_caveat(preshared: Iterable[Mapping[str, Any]]) -> str | None:
    """What the pair's authentication secret adds to its keys' statement (module docstring), from the
    metadata of its pre-shared blocks: :data:`AUTH_BOOTSTRAP` if one was generated by labqfl here
    (``simulated`` true or absent), else :data:`AUTH_CSPRNG` if one records CSPRNG (or seeded)
    randomness, else None (secrets an operator loaded, or none recorded)."""
    metas = list(preshared)
    if any(m.get("simulated", True) is not False for m in metas):
        return AUTH_BOOTSTRAP
    if any(m.get("randomness") in ("csprng", "seeded") for m in metas):
        return AUTH_CSPRNG
    return None


def block_provenance(meta: Mapping[str, Any]) -> Provenance | None:
    """The provenance recorded in a key-store block's metadata, None if it has none."""
    d = meta.get("provenance") if isinstance(meta, Mapping) else None
    return Provenance.from_dict(d) if d is not None else None


def summarize_blocks(blocks: Iterable[Mapping[str, Any]], *, retired: Iterable[str] = ()) -> dict[str, Any]:
    """Provenance of a pair's key blocks (``KeyStore.blocks(pair)`` rows, or their ``meta`` dicts).

    Returns ``{"blocks": {label: count}, "auth_refill_blocks": n, "preshared_blocks": n,
    "preshared_generated_by_labqfl": n, "unrecorded_blocks": n, "auth_secret": caveat | None,
    "weakest": Provenance dict | None, "security": statement, "information_theoretic": bool,
    "information_theoretic_condition": IT_CONDITION | None}``.
    ``blocks`` counts distilled blocks: the key store keeps a distilled block's authentication refill as a
    second row (``meta.kind = "auth-refill"``, :data:`AUTH_REFILL_KIND`), counted in ``auth_refill_blocks``
    and not in ``blocks`` (its provenance, the same distillation's, still enters the weakest).
    Pre-shared authentication secrets (``meta.kind = "preshared-auth"``, auth pool only, never
    delivered) are counted apart, and their origin is the caveat ``auth_secret`` (:func:`auth_secret_caveat`:
    a pair whose authentication started from a secret labqfl made is never information-theoretic; an imported block
    brings the source store's secrets' origin, :data:`AUTH_ORIGIN_FIELD`, and its caveat); a block without a provenance record (distilled before labqfl
    recorded it, or imported) gets no claim, and the pair is then not called information-theoretic.
    A block whose ID is in ``retired`` (``KeyStore.retired_blocks``, ``labqfl keys retire``) is counted in
    ``retired_blocks`` only (its refill row in none), not in ``blocks``, ``auth_refill_blocks`` or ``unrecorded_blocks``; its provenance
    still enters the weakest (conservative, as for spent blocks: it may have handed out key before it was
    retired).
    """
    retired = set(retired)
    counts: dict[str, int] = {}
    provs: list[Provenance] = []
    pre_metas: list[Mapping[str, Any]] = []
    inherited: list[Mapping[str, Any]] = []  # an imported block's record of the source's secret (review s38 F1)
    unrecorded = refills = gone = 0
    for row in blocks:
        meta = _meta(row)
        if isinstance(row, Mapping) and row.get("block_id") in retired and meta.get("kind") != PRESHARED_KIND:
            gone += meta.get("kind") != AUTH_REFILL_KIND  # distilled blocks, as ``blocks`` counts them
            inherited += [o for o in meta.get(AUTH_ORIGIN_FIELD) or [] if isinstance(o, Mapping)]
            if (p := block_provenance(meta)) is not None:
                provs.append(p)
            continue
        if meta.get("kind") == PRESHARED_KIND:
            pre_metas.append(meta)
            continue
        inherited += [o for o in meta.get(AUTH_ORIGIN_FIELD) or [] if isinstance(o, Mapping)]
        p = block_provenance(meta)
        if meta.get("kind") == AUTH_REFILL_KIND:
            refills += 1
            if p is not None:
                provs.append(p)
            continue
        if p is None:
            unrecorded += 1
            continue
        provs.append(p)
        counts[p.label] = counts.get(p.label, 0) + 1
    w = weakest(provs)
    caveat = auth_secret_caveat([*pre_metas, *inherited])
    weakest_it = w is not None and caveat is None and is_information_theoretic(w)
    all_it = weakest_it and unrecorded == 0
    if w is None:
        statement = "no key blocks with a provenance record: nothing is claimed for them" if unrecorded else "no key blocks"
    else:
        statement = _caveated_statement(w, caveat)
        if len(counts) > 1:
            statement = f"weakest of {len(counts)} provenances: {statement}"
    if unrecorded and w is not None:
        statement += (f"; {unrecorded} block(s) carry no provenance record (distilled before labqfl recorded it, "
                      "or imported): nothing is claimed for them")
    return {"blocks": dict(sorted(counts.items())), "auth_refill_blocks": refills, "preshared_blocks": len(pre_metas),
            "preshared_generated_by_labqfl": sum(m.get("simulated", True) is not False for m in pre_metas),
            "unrecorded_blocks": unrecorded, "retired_blocks": gone, "auth_secret": caveat,
            # the weakest block's own record, its derived fields under the authentication caveat
            "weakest": ({**w.as_dict(), "security": _caveated_statement(w, caveat),
                         "information_theoretic": weakest_it,
                         "information_theoretic_condition": it_condition(w) if weakest_it else None}
                        if w is not None else None), "security": statement,
            "information_theoretic": all_it, "information_theoretic_condition": it_condition(w) if all_it and w else None}


def _caveated_statement(w: Provenance, caveat: str | None) -> str:
    """:func:`security_statement` of ``w`` with the authentication secret's caveat; a hardware/QRNG block
    under a caveat loses the information-theoretic phrase: the caveat comes first."""
    if caveat is None:
        return security_statement(w)
    if is_information_theoretic(w):
        return (f"rests on the authentication secret: {caveat}; the key itself: hardware physical layer, QRNG "
                f"randomness, {w.protocol} under the assumptions of docs/protocol.md §7{_eps(w)}{_intensities(w)}")
    return f"{security_statement(w)}; {caveat}"


def weakest_summary(summaries: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The weakest of several :func:`summarize_blocks` results (e.g. one per pair); a summary with
    unrecorded blocks or none at all counts as weaker than any recorded provenance. None if empty."""
    def rank(sm: Mapping[str, Any]) -> tuple[int, float, float]:
        w = sm.get("weakest")
        if w is None or sm.get("unrecorded_blocks"):
            return (-1, 0.0, 0.0)
        p = Provenance.from_dict(w)
        r, band, eps = _strength(p)
        return (min(r, 2), 0.0, eps) if sm.get("auth_secret") else (r, band, eps)  # a caveat: computational at best

    return min(summaries, key=rank, default=None)


def store_pair_provenance(store: Any, pair: str) -> dict[str, Any]:
    """:func:`summarize_blocks` over every block ``store`` holds for ``pair`` (spent ones included:
    conservative, a pool is never described as stronger than any block it ever held); the blocks retired there
    (``labqfl keys retire``) are counted apart (``retired_blocks``), not as blocks of the pool."""
    retired = [r["block_id"] for r in store.retired_blocks()] if hasattr(store, "retired_blocks") else []
    return summarize_blocks(store.blocks(pair), retired=retired)


def provenance_of_block_ids(store: Any, pair: str, block_ids: Iterable[str]) -> dict[str, Any]:
    """:func:`summarize_blocks` over the named blocks of ``pair`` in ``store`` (e.g. the blocks a
    training run consumed key bits from) and the pair's pre-shared blocks (where its authentication
    started: :func:`auth_secret_caveat`); an ID the store does not hold counts as unrecorded."""
    wanted = set(block_ids)
    all_rows = store.blocks(pair)
    rows = [r for r in all_rows if r["block_id"] in wanted]
    found = {r["block_id"] for r in rows}
    rows += [{"meta": {}} for _ in wanted - found]
    rows += [r for r in all_rows if r["block_id"] not in wanted and _meta(r).get("kind") == PRESHARED_KIND]
    return summarize_blocks(rows)


def run_provenance(store: Any, pair: str, run_id: str) -> dict[str, Any]:
    """:func:`summarize_blocks` over the blocks of ``pair`` that run ``run_id`` stored in ``store`` (their
    ``run_id``) and the pair's pre-shared blocks (:func:`auth_secret_caveat`), e.g. what a ``labqfl
    distill`` or ``labqfl run`` stored."""
    return summarize_blocks(r for r in store.blocks(pair)
                            if r.get("run_id") == run_id or _meta(r).get("kind") == PRESHARED_KIND)


# -- federated-learning masks --------------------------------------------------------------------
CSPRNG_MASKS = "computational (AES-CTR CSPRNG masks, stand-in for QKD keys)"


def mask_key_provenance(key_source: Any) -> dict[str, dict[str, Any]] | None:
    """Per pair, the provenance of the key blocks a training run's masks drew from.

    ``key_source``: a :class:`labqfl.fl.keysource.KeyStoreKeySource` (its ``stores`` and
    ``blocks_used``), or any other source (None: no QKD keys). When the source handed out nothing
    itself (the Flower engine's nodes draw from their own stores) every block the stores hold for
    each pair counts (conservative: :func:`store_pair_provenance`)."""
    stores = getattr(key_source, "stores", None)
    if getattr(key_source, "name", None) != "qkd" or not stores:
        return None
    used: Mapping[str, Iterable[str]] = getattr(key_source, "blocks_used", {}) or {}
    if used:
        return {pair: provenance_of_block_ids(stores[pair.split("-")[0]], pair, ids) for pair, ids in sorted(used.items())}
    out: dict[str, dict[str, Any]] = {}
    for node, st in sorted(stores.items()):
        for pair in st.pairs():
            a, b = pair.split("-")
            if a == node and b in stores:
                out[pair] = store_pair_provenance(st, pair)
    return out


def mask_key_security(key_source: Any) -> str:
    """What one-time-pad masks from ``key_source`` rest on: the weakest pair's key statement for QKD
    keys (:func:`mask_key_provenance`), :data:`CSPRNG_MASKS` for the CSPRNG stand-in."""
    per_pair = mask_key_provenance(key_source)
    if per_pair is None:
        return CSPRNG_MASKS
    w = weakest_summary(per_pair.values())
    if w is None:
        return "one-time-pad masks with QKD keys; no key consumed"
    return qkd_masks_statement(w)


def qkd_masks_statement(weakest: Mapping[str, Any]) -> str:
    """What QKD-key masks rest on, from the weakest pair's summary (:func:`weakest_summary`)."""
    return f"one-time-pad masks with QKD keys from the node key stores; the keys: {weakest['security']}"


#: the sentence that ends a training run's security line, per engine (review s34 F8): who holds every
#: client's update and pad, so that the masks protect nothing against them
LOCAL_ENGINE_TRUST = ("In-process engine: one process computes every client's update and reads every pad, so the "
                      "masks protect nothing against that process's operator.")
SIMULATION_TRUST = ("Flower simulation: one command runs every client's update and pad (its Ray worker processes, "
                    "one OS user, every client's key store), so the masks protect nothing against its operator; its "
                    "nodes follow the settings in the server's messages, with no operator-signed spec")
#: the unsigned simulation's refs: the documented residual of docs/secure_aggregation.md §9
SIMULATION_REFS_TAG_ONLY = ("; the masters' refs are checked by the refs tag alone, with no node signature "
                            "(docs/secure_aggregation.md §9)")
#: the unsigned simulation's csprng keys: relayed by the server with no node signature (docs/secure_aggregation.md §9)
SIMULATION_PK_UNSIGNED = ("; the clients' X25519 public keys are relayed unsigned, so the server could substitute "
                          "them and unmask (docs/secure_aggregation.md §9)")


#: ``labqfl run`` over nodes on one machine (review s34 FL note): separate processes, one OS user, one data folder
LOCAL_NODES_TRUST = ("Nodes on one machine: the FL server node and every client's SuperNode are separate processes of "
                     "one OS user sharing one data folder, so the masks protect nothing against that user.")


def run_engine_trust(nodes: bool) -> str:
    """The last sentence of ``labqfl run``'s training security line: over local node processes
    (:data:`LOCAL_NODES_TRUST`) or in process (:data:`LOCAL_ENGINE_TRUST`)."""
    return LOCAL_NODES_TRUST if nodes else LOCAL_ENGINE_TRUST


def engine_trust(engine: str, keys: str) -> str:
    """The last sentence of the security line of a ``labqfl train`` run on ``engine`` (``local`` or the
    ``flower`` simulation) with ``keys`` (``qkd``: the refs need the tag; ``csprng``: the public keys go
    unsigned, as the simulation's nodes have no certificates)."""
    if engine == "local":
        return LOCAL_ENGINE_TRUST
    if engine == "flower":
        return SIMULATION_TRUST + (SIMULATION_REFS_TAG_ONLY if keys == "qkd" else SIMULATION_PK_UNSIGNED) + "."
    raise ValueError(f"engine {engine!r}: expected local or flower")


__all__ = ["AUTH_BOOTSTRAP", "AUTH_REFILL_KIND", "AUTH_CSPRNG", "auth_secret_caveat", "run_provenance", "CSPRNG_DESCRIPTION", "CSPRNG_MASKS", "LOCAL_ENGINE_TRUST", "LOCAL_NODES_TRUST", "SIMULATION_PK_UNSIGNED", "SIMULATION_REFS_TAG_ONLY",
           "SIMULATION_TRUST", "engine_trust", "run_engine_trust", "mask_key_provenance", "qkd_masks_statement", "mask_key_security", "IT_PHRASE", "IT_CONDITION", "NO_BAND", "PHYSICAL_LAYERS", "PROTOCOL", "RANDOMNESS_SOURCES", "Provenance",
           "block_provenance", "client_randomness", "is_information_theoretic", "pair_provenance",
           "provenance_of_block_ids", "security_statement", "station_physical_layer", "store_pair_provenance",
           "summarize_blocks", "weakest", "weakest_randomness", "weakest_summary"]
