"""``labqfl keys status|serve|certs|ticket|export|abort-export|import|retire|preshare``: the node key stores, ETSI 014
delivery, pre-shared authentication secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from labqfl.cli.common import (
    CONFIG_OPTION,
    EXIT_ERROR,
    JSON_OPTION,
    console,
    emit,
    fail,
    handle_errors,
    print_table,
)
from labqfl.errors import DataFormatError, KeyStoreError

keys_app = typer.Typer(help="Key stores of the nodes, ETSI GS QKD 014 key delivery, certificates, export/import "
                            "(bound by import tickets), retiring a block, "
                            "pre-shared authentication secrets.",
                       no_args_is_help=True)

DATA_DIR_OPTION = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                               help="Data folder holding keystore/NODE.sqlite (default: the user data dir).")


def _nodes_or_all(nodes: list[str] | None, data_dir: Path | None) -> list[str]:
    from labqfl.keystore import list_node_stores

    found = list_node_stores(data_dir)
    if not nodes:
        return found
    missing = [n for n in nodes if n not in found]
    if missing:
        raise KeyStoreError(f"no key store for node(s) {', '.join(missing)} under {data_dir or 'the default data dir'}"
                            f"; found {', '.join(found) or 'none'}")  # names, not a Python list (review s38 user F12)
    return nodes


def _node_status(node: str, ddir: Path) -> dict[str, Any]:
    """One node's entry of ``keys status``: accounting, store ID, exports, scrub state, provenance, and its
    ``pending`` blocks (:func:`labqfl.nodes.preshared.pending_blocks`: accepted here as Cj, waiting for Ci's
    commit; read from the files' headers, never a key bit); for a store that cannot be opened or read,
    ``{"store", "error"}`` (the file is left as it is), with ``pending`` where blocks are pending there."""
    import sqlite3

    from labqfl.keystore import KeyStore, node_store_path
    from labqfl.keystore.transfer import leftover_import_files, recover_exports
    from labqfl.nodes.preshared import pending_blocks
    from labqfl.provenance import store_pair_provenance

    path = node_store_path(node, ddir)
    pending = pending_blocks(ddir, node)  # <data>/nodes/<node>/pending, as the client node writes them
    try:
        with KeyStore.for_node(node, ddir, create=False) as st:  # never creates or initialises a store
            recovered = recover_exports(st)  # exports a crash interrupted: finished or undone (review s33 F1)
            acc = st.accounting()
            provenance = {p: store_pair_provenance(st, p) for p in acc}
            for p, a in acc.items():  # user-facing blocks: distilled ones (docs/keystore.md), auth rows apart
                a["blocks"] = sum(provenance[p]["blocks"].values()) + provenance[p]["unrecorded_blocks"]
                a["auth_refill_blocks"] = provenance[p]["auth_refill_blocks"]
                a["preshared_blocks"] = provenance[p]["preshared_blocks"]
                a["retired_blocks"] = provenance[p]["retired_blocks"]  # not in "blocks" (keys retire)
            # export files written next to the store because the target could not be written (transfer.export_keys)
            waiting = sorted(str(p) for p in path.parent.glob(f"{node}.export-*.json"))
            return {"store": str(st.path), "store_id": st.store_id, "pairs": acc, "exports": st.exports(),
                    "recovered": recovered, "export_files_here": waiting,
                    "imported_files_left": leftover_import_files(st), "scrub": st.scrub(),
                    "overlapping_blocks": st.overlapping_blocks(),  # doubles of an older store (review s38 K1)
                    "retired_blocks": st.retired_blocks(),  # keys retire
                    "provenance": provenance, "pending": pending}
    except (KeyStoreError, sqlite3.Error, OSError) as exc:
        return {"store": str(path), "error": str(exc) if isinstance(exc, KeyStoreError) else f"key store {path}: {exc}",
                **({"pending": pending} if pending["pairs"] or pending["unreadable"] else {})}


#: The per-purpose columns of ``keys status``'s table that are left out, and named in one line below it, where
#: every store and pair holds 0 bits in them (review s40 user LOW-3)
_QUIET_STATES = ("reserved", "exporting", "exported")


def _pools(nodes: dict[str, dict[str, Any]], state: str) -> list[str]:
    """The pools (purposes) of ``state`` ("available", "consumed"…) that any store's pair holds bits in: "auth"
    first, then "general", then the others by name."""
    seen = {k for info in nodes.values() for a in info.get("pairs", {}).values() for k, v in a[state].items() if v}
    order = {"auth": 0, "general": 1}
    return sorted(seen, key=lambda k: (order.get(k, 2), k))


def _status_table(nodes: dict[str, dict[str, Any]]) -> tuple[Table, list[str]]:
    """``keys status``'s table: one row per store (node) and pair, one column per pool of available and of consumed
    bits, with thousands separators (review s40 user LOW-3: 9 lines per store and pair, 108 lines for 4 nodes,
    numbers without separators); reserved, exporting, exported and pending get a column only where some store
    holds any, else they are named in the returned note lines ("reserved, exporting, exported, pending: 0 …")."""
    pending = {n: info.get("pending", {}).get("pairs", {}) for n, info in nodes.items()}
    avail, used = _pools(nodes, "available"), _pools(nodes, "consumed")
    quiet = [s for s in _QUIET_STATES if not _pools(nodes, s)]
    loud = [s for s in _QUIET_STATES if s not in quiet]
    show_pending = any(pending.values())
    heads = (["node", "pair", "blocks"] + [f"available {k} [bits]" for k in avail or ["general"]]
             + [f"consumed {k} [bits]" for k in used] + [f"{s} [bits]" for s in loud] + ["added [bits]"]
             + (["pending"] if show_pending else []))
    t = Table(*heads)
    for col in t.columns[2:]:  # counts of bits and blocks, aligned on their last digit
        col.justify = "right"

    def by_pool(d: dict[str, int]) -> str:  # a state without a column of its own per pool: "auth 768; fl 4,480"
        return "; ".join(f"{k} {v:,}" for k, v in sorted(d.items()) if v) or "0"

    def pend(n: str, p: str) -> list[str]:
        d = pending[n].get(p)
        return [f"{d['blocks']} ({d['bits']:,} bits)" if d else "0"] if show_pending else []

    for n, info in nodes.items():
        pending_only = [p for p in pending[n] if p not in info.get("pairs", {})]
        if "error" in info:
            t.add_row(n, "—", "ERROR: store unreadable (see below)", *[""] * (len(heads) - 3))
        elif not info["pairs"] and not pending_only:
            t.add_row(n, "—", *["0"] * (len(heads) - 2))
        for p, a in info.get("pairs", {}).items():
            t.add_row(n, p, f"{a['blocks']:,}", *[f"{a['available'].get(k, 0):,}" for k in avail or ["general"]],
                      *[f"{a['consumed'].get(k, 0):,}" for k in used], *[by_pool(a[s]) for s in loud],
                      f"{a['added']:,}", *pend(n, p))
        for p in pending_only:  # blocks of a pair pending here, none of it in the store yet
            t.add_row(n, p, *["0"] * (len(heads) - 3 - show_pending), *pend(n, p))
    zero = quiet + ([] if show_pending else ["pending"])
    notes = [f"{', '.join(zero)}: 0 bits at every store and pair shown"] if zero and any(
        "pairs" in info for info in nodes.values()) else []
    return t, notes


def _render_status(con: Any, ddir: Path, nodes: dict[str, dict[str, Any]]) -> None:
    con.print(f"key stores under {ddir}" if nodes else f"no key stores in {ddir / 'keystore'} (the folder is empty)")
    if nodes:
        t, notes = _status_table(nodes)
        print_table(con, t, key_columns=2)  # whole at any width: one record per node and pair where it does not fit
        for line in notes:
            con.print(line)
    statements: dict[str, dict[str, list[Any]]] = {}  # statement -> its pairs and weakest blocks, printed once
    provenance: dict[str, list[tuple[str, str]]] = {}  # a provenance line -> the (node, pair)s it is of
    for n, info in nodes.items():
        if "error" in info:
            _print_pending(con, n, info.get("pending", {}))
            continue
        sc = info["scrub"]
        state = ("WAL checkpoint PENDING: a reader holds an old snapshot, so overwritten key material is still "
                 f"in the database files ({sc['wal_bytes']} WAL bytes)") if sc["pending"] else "WAL checkpointed"
        con.print(f"{n}: store {info['store_id']}, {len(info['exports'])} export(s); {state}")
        _print_recovered(con, info.get("recovered", []))
        for f in info.get("imported_files_left", []):
            how = ("overwrite it with zeros and delete it (it was partly overwritten: an import stopped while "
                   "destroying it, so `labqfl keys import` cannot read it)" if f.get("partly_overwritten") else
                   f"`labqfl keys import {f['file']}` overwrites and deletes it")
            con.print(f"  WARNING: export file {f['file']} (export {f['export_id']}) was imported into this store and "
                      f"is still on disk: it holds key bits in clear that are live here; destroy it ({how})"
                      + (f"; it cannot be read now: {f['unreadable']}" if f.get("unreadable") else ""), soft_wrap=True)
        for d in info.get("overlapping_blocks", []):
            (a, b), (sa, sb) = d["blocks"], d["slots"]
            con.print(f"  WARNING: pair {d['pair']}: blocks {a} (slots [{sa[0]}, {sa[1]})) and {b} (slots [{sb[0]}, "
                      f"{sb[1]})) were distilled from the same raw slots of acquisition {d['acquisition']} (imported "
                      "or distilled before the store checked block origins): their keys are not independent "
                      f"(docs/protocol.md §5.2, P7); use only one of them: retire the other at both ends of the pair "
                      f"(e.g. `labqfl keys retire {b}`)", soft_wrap=True)
        retired: dict[str, list[dict[str, Any]]] = {}
        for r in info.get("retired_blocks", []):
            retired.setdefault(r["key_block"], []).append(r)
        for rows in retired.values():
            r = rows[0]
            con.print(f"  retired: block(s) {', '.join(x['block_id'] for x in rows)} of pair {r['pair']} at "
                      f"{r['created']} ({r['reason']}): {sum(x['discarded'] for x in rows)} unused bits overwritten, "
                      "never handed out", soft_wrap=True)
        for f in info.get("export_files_here", []):
            con.print(f"  export file {f}: written next to the store because its target could not be written; it "
                      "holds key bits in clear: import it (`labqfl keys import`) or move it to its target", soft_wrap=True)
        for p, prov in info["provenance"].items():
            provenance.setdefault(_provenance_text(p, prov, statements), []).append((n, p))
        _print_pending(con, n, info.get("pending", {}))
    _print_provenance(con, provenance)
    _print_statements(con, statements)


def _print_pending(con: Any, node: str, pending: dict[str, Any]) -> None:
    """A node's pending blocks (:func:`_node_status`), one line per pair, and its unreadable pending files."""
    for p, d in pending.get("pairs", {}).items():
        ci = p.split("-")[0]
        con.print(f"  {p}: {d['blocks']} block(s) pending at {node} ({d['bits']:,} bits, not in its store: a draw "
                  f"of them is refused): accepted there, waiting for {ci}'s commit; at the pair's next session "
                  f"stored at {node} if {ci} holds them, else destroyed", soft_wrap=True)
    for what in pending.get("unreadable", []):
        con.print(f"  pending block file of {node} not read: {what}", soft_wrap=True)


def _provenance_text(pair: str, prov: dict[str, Any], statements: dict[str, dict[str, list[Any]]]) -> str:
    """A pair's provenance (:func:`labqfl.provenance.summarize_blocks`) in words: blocks by physical
    layer/randomness, pre-shared ones (those labqfl generated named as such), and the number of its security statement
    in ``statements``, which :func:`_print_statements` prints once with the weakest block's protocol and ε terms (for
    every kind of block, review s33 L3): the same 5-line statement stood under every pair at both its nodes, 12
    times for 4 nodes (review s38 user F10). The pair is not named: :func:`_print_provenance` names the stores and
    pairs of each line once."""
    blocks = ", ".join(f"{k} {v}" for k, v in prov["blocks"].items()) or "none with a record"
    pre, own = prov["preshared_blocks"], prov.get("preshared_generated_by_labqfl", 0)
    pre_text = f"{pre} pre-shared" + (f" ({own} generated by labqfl: simulated delivery)" if own else "")
    extra = f", {n} unrecorded" if (n := prov["unrecorded_blocks"]) else ""
    extra += (f"; {r} retired, not counted (their record still enters the statement: they may have handed out "
              "key before)" if (r := prov.get("retired_blocks", 0)) else "")
    refills = prov.get("auth_refill_blocks", 0)
    auth = "; ".join(t for t, v in ((pre_text, pre), (f"{refills} auth refill(s) from distilled blocks", refills)) if v)
    auth_text = f"; authentication key: {auth}" if auth else ""
    group = statements.setdefault(str(prov["security"]), {"pairs": [], "weakest": []})
    if pair not in group["pairs"]:
        group["pairs"].append(pair)
    if prov.get("weakest"):
        group["weakest"].append(prov["weakest"])
    k = list(statements).index(str(prov["security"])) + 1
    return (f"(distilled blocks by physical layer/randomness: {blocks}{extra}{auth_text}): security statement ({k}) "
            "below")


def _print_provenance(con: Any, lines: dict[str, list[tuple[str, str]]]) -> None:
    """Each distinct provenance line of :func:`_provenance_text` once, with the pairs it is of (review s40 user
    LOW-3: one line per store and pair, 12 near-identical 200-character lines for 4 nodes): a pair whose every
    store shown has the line is named alone, else with the stores that have it ("C1-C2 at C1")."""
    stores: dict[str, list[str]] = {}
    for rows in lines.values():
        for n, p in rows:
            stores.setdefault(p, []).append(n)
    for text, rows in lines.items():
        pairs = list(dict.fromkeys(p for _, p in rows))
        names = [p if len(at := [n for n, q in rows if q == p]) == len(stores[p]) else f"{p} at {'/'.join(at)}"
                 for p in pairs]
        which = (f"every pair ({', '.join(pairs)}) at each of its stores shown" if len(lines) == 1 and len(pairs) > 1
                 else ", ".join(names))
        con.print(f"provenance of {which} {text}")  # wrapped at words


_EPS_TERMS = (("eps_sec", "ε_sec"), ("eps_cor", "ε_cor"), ("eps_auth", "ε_auth"), ("eps_total", "ε_total"))


def _print_statements(con: Any, statements: dict[str, dict[str, list[Any]]]) -> None:
    """Each distinct security statement of :func:`_print_provenance` once, numbered, with its pairs, and the weakest
    block of those pairs: its protocol(s) and each ε term's largest value (the weakest)."""
    if statements:
        con.print("what the keys rest on (security statements):")
    for k, (text, group) in enumerate(statements.items(), start=1):
        con.print(f"  ({k}) {', '.join(group['pairs'])}: {text}")
        ws = group["weakest"]
        if ws:
            protocols = ", ".join(dict.fromkeys(str(w["protocol"]) for w in ws))
            eps = ", ".join(f"{name} " + (format(max(vals), ".1e") if (vals := [w[key] for w in ws
                                                                                 if w.get(key) is not None]) else "—")
                            for key, name in _EPS_TERMS)
            con.print(f"      weakest block: protocol {protocols}; {eps} per block (the largest over these pairs: the "
                      "analysis' terms; what the key rests on is the statement)")


def _print_recovered(con: Any, notes: list[dict[str, str]]) -> None:
    """The notes of :func:`labqfl.keystore.transfer.recover_exports` (interrupted exports)."""
    for note in notes:
        con.print(f"  {'WARNING: ' if note['action'] == 'held' else ''}{note['message']}", soft_wrap=True)


@keys_app.command("status")
@handle_errors
def status(node: list[str] = typer.Option(None, "--node", "-n", help="Node(s) to show (default: every store)."),
           data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Key accounting per node and pair: available, reserved, consumed, exporting, exported (bits, by purpose); the
    store's ID (for export binding), its exports, whether overwritten key material is still
    waiting for a WAL checkpoint (a reader holds an old snapshot), and per pair the provenance of
    its key blocks (physical layer, clients' randomness) with what their security rests on; per node and pair,
    its pending blocks (accepted there as the pair's second client, waiting for the first one's commit; JSON:
    each node's "pending").

    A data dir without a keystore/ folder is an error (a wrong --data-dir is not "no keys"); an
    empty keystore/ folder is an empty status. A store that cannot be read is reported as an error
    in its row (JSON: its entry's "error"), the others are still shown, and the exit status is 1;
    the unreadable file is never modified. An export that a crash interrupted is finished or undone
    first, and said so (the rule: docs/keystore.md, "Interrupted exports").
    """
    from labqfl.keystore import default_data_dir

    ddir = data_dir or default_data_dir()
    if not (ddir / "keystore").is_dir():
        what = "does not exist" if not ddir.exists() else "exists, but no labqfl command made key stores in it"
        raise fail(f"no key stores under {ddir} (no keystore/ folder); the folder {what}: give the data dir that "
                   "`labqfl distill`/`labqfl run` wrote to (--data-dir or $LABQFL_DATA_DIR)")
    nodes = {n: _node_status(n, ddir) for n in _nodes_or_all(node, ddir)}
    bad = [n for n, info in nodes.items() if "error" in info]
    doc: dict[str, Any] = {"data_dir": str(ddir), "nodes": nodes}
    if bad:  # at the top as every failing command's JSON has it (issue 19); each store's own stays in its entry
        doc["error"] = "; ".join(f"node {n}: {nodes[n]['error']}" for n in bad)
    emit(doc, as_json, lambda con: _render_status(con, ddir, nodes))
    for n in bad:
        fail(f"node {n}: {nodes[n]['error']}")
    if bad:
        raise typer.Exit(EXIT_ERROR)


@keys_app.command("certs")
@handle_errors
def certs(out_dir: Path = typer.Argument(..., file_okay=False, help="Folder for ca.pem/ca.key, kme-NAME.pem/.key, sae-NAME.pem/.key."),
          kme: list[str] = typer.Option(None, "--kme", help="KME server certificate name(s) (default: kme)."),
          sae: list[str] = typer.Option(None, "--sae", help="SAE client certificate name(s) = SAE IDs "
                                        "(default: the station's clients, C1..CK)."),
          host: list[str] = typer.Option(None, "--host", help="Host names/IPs in the KME certificate "
                                         "(default: localhost, 127.0.0.1, ::1)."),
          days: int = typer.Option(825, "--days", min=1, max=36500, help="Validity [days], 1 to 36500."),
          force: bool = typer.Option(False, "--force", help="Overwrite existing files and make a new CA (also "
                                     "where the folder's CA can issue no more: ca.key or ca.pem gone)."),
          config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Make a development CA plus KME (server) and SAE (client) certificates for local use."""
    from labqfl.config import load_station_config
    from labqfl.keystore.certs import (
        DEFAULT_HOSTS,
        ca_cut_warning,
        ca_key_warning,
        issued_certs,
        kme_uri,
        make_dev_certs,
        spki_pin,
    )

    saes = sae or [c.name for c in load_station_config(config).clients]
    kmes = kme or ["kme"]
    before = issued_certs(out_dir) if force and out_dir.is_dir() else []
    old_ca = not force and (out_dir / "ca.pem").is_file()  # make_dev_certs reuses it (else it makes a new one)
    files = make_dev_certs(out_dir, kmes=kmes, saes=saes, hosts=host or list(DEFAULT_HOSTS), days=days, force=force)
    # what an SAE checks to know it talks to this KME, not to another server of the same CA (docs/keystore.md)
    ids = {n: {"identity": kme_uri(n), "pin": spki_pin(files[f"kme-{n}"])} for n in kmes}
    # the CA key left in the folder: the warning node certs gives too (review s34 L10), in the JSON and on stderr
    warnings = [ca_key_warning(files["ca.key"], "every KME and SAE that trusts this ca.pem", "KME/SAE",
                               "shred it; a later `labqfl keys certs` into this folder then refuses, unless given "
                               "--force: that makes a new CA, whose ca.pem replaces this one")]
    cut = _cut_by_ca(files, days) if old_ca else []
    if cut:  # the folder's older CA ends first: what it issued now ends with it (as node certs warns)
        warnings.append(ca_cut_warning(out_dir, cut[0], cut[1:], days,
                                       "--force makes a new CA, in another folder for longer ones"))
    stale = [n for n in before if n not in {p.name for p in files.values()}]
    if stale:  # --force made a new CA: what the old one issued stays in the folder, trusted by no ca.pem here
        warnings.append(f"--force made a new CA in {out_dir}: {', '.join(stale)} there were issued by the old CA, "
                        "which the new ca.pem does not trust; re-issue them (--kme/--sae) or remove them")
    data = {"dir": str(out_dir), "files": {k: str(v) for k, v in files.items()}, "kmes": ids, "warnings": warnings}

    def render(con: Any) -> None:
        con.print(f"wrote {len(files)} files to {out_dir}: " + ", ".join(sorted(p.name for p in files.values())))
        for n, v in ids.items():
            con.print(f"KME {n}: identity {v['identity']} (URI subjectAltName); public-key pin for SAEs "
                      f"(curl --pinnedpubkey): {v['pin']}", soft_wrap=True)

    emit(data, as_json, render)
    for w in warnings:
        console.print(f"warning: {w}", soft_wrap=True)


def _cut_by_ca(files: dict[str, Path], days: int) -> list[str]:
    """``[CA end, names…]`` of the certificates ``keys certs`` just issued that end before the ``days`` asked for
    because the reused CA ends first (``keystore.certs.issued_validity``); ``[]`` when none is."""
    from cryptography import x509

    from labqfl.keystore.certs import cut_short

    ca_end = x509.load_pem_x509_certificate(files["ca"].read_bytes()).not_valid_after_utc
    cut = []
    for name, path in files.items():
        if name in ("ca", "ca.key") or path.suffix != ".pem":
            continue
        c = x509.load_pem_x509_certificate(path.read_bytes())
        if cut_short(c.not_valid_before_utc, c.not_valid_after_utc, days):
            cut.append(name)
    return [f"{ca_end:%Y-%m-%d %H:%M:%S} UTC", *cut] if cut else []


@keys_app.command("serve")
@handle_errors
def serve(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          port: int = typer.Option(8443, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
          cert: Path | None = typer.Option(None, "--cert", dir_okay=False, help="KME certificate (PEM)."),
          key: Path | None = typer.Option(None, "--key", dir_okay=False, help="KME private key (PEM)."),
          ca: Path | None = typer.Option(None, "--ca", dir_okay=False, help="CA that signs the SAE certificates."),
          certs_dir: Path | None = typer.Option(None, "--certs", file_okay=False,
                                                help="Folder from `labqfl keys certs`: defaults for --cert/--key/--ca "
                                                     "(kme-NAME.pem/.key, ca.pem)."),
          kme_name: str = typer.Option("kme", "--kme-name", help="KME certificate name inside --certs."),
          kme_config: Path | None = typer.Option(None, "--kme-config", dir_okay=False,
                                                 help="KME config TOML ([saes] SAE_ID = node; limits). Default: "
                                                      "SAE ID = node name for every store in the data dir."),
          data_dir: Path | None = DATA_DIR_OPTION,
          as_json: bool = typer.Option(False, "--json", help="Print the endpoint (url, SAEs, CA) as one JSON line on "
                                                             "stdout once listening, then serve.")) -> None:
    """Serve ETSI GS QKD 014 v1.1.1 (status, enc_keys, dec_keys) over HTTPS with mutual TLS."""
    from labqfl.keystore import default_data_dir
    from labqfl.keystore.etsi import (
        KeyDeliveryService,
        KmeSettings,
        bind_socket,
        build_server,
        load_kme_settings,
        open_kme_stores,
    )

    if certs_dir is not None:
        cert = cert or certs_dir / f"kme-{kme_name}.pem"
        key = key or certs_dir / f"kme-{kme_name}.key"
        ca = ca or certs_dir / "ca.pem"
    if cert is None or key is None or ca is None:
        raise fail("give --cert, --key and --ca (or --certs DIR from `labqfl keys certs`)")
    ddir = data_dir or default_data_dir()
    if kme_config is not None:
        settings = load_kme_settings(kme_config)
    else:
        nodes = _nodes_or_all(None, ddir)
        if not nodes:
            raise fail(f"no key stores under {ddir}; run `labqfl distill` first or give --data-dir")
        settings = KmeSettings(saes={n: n for n in nodes}, nodes=nodes)
    stores = open_kme_stores(settings, ddir)  # a node without a store (a typo in [saes]) is refused
    server = build_server(KeyDeliveryService(stores, settings), host=host, port=port, certfile=cert, keyfile=key,
                          cafile=ca)
    sock = bind_socket(host, port)
    from labqfl.cli.common import console, mark_json_sent

    real_port = sock.getsockname()[1]
    if as_json:
        import json
        import sys

        sys.stdout.write(json.dumps({"url": f"https://{host}:{real_port}/api/v1/keys/", "host": host, "port": real_port,
                                     "saes": settings.saes, "ca": str(ca), "mutual_tls": True}) + "\n")
        sys.stdout.flush()
        mark_json_sent()  # a failure after it is the error line on stderr only: stdout keeps one document
    console.print(f"KME serving ETSI GS QKD 014 on https://{host}:{real_port}/api/v1/keys/ (mutual TLS, CA {ca}); "
                  f"SAEs: {', '.join(f'{s}→{n}' for s, n in settings.saes.items())}. Ctrl-C to stop.")
    server.run(sockets=[sock])


@keys_app.command("ticket")
@handle_errors
def ticket(node: str = typer.Option(..., "--node", "-n", help="Target node: the store that will import."),
           out: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Ticket file to create (never overwritten)."),
           data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Issue a one-time import ticket from a node's store (created if missing), for `keys export --ticket`."""
    from labqfl.keystore import KeyStore, default_data_dir
    from labqfl.keystore.certs import make_private_dirs
    from labqfl.keystore.transfer import write_ticket

    # the folders this makes hold a store and a secret: 0700 whatever the umask (review s35 F3)
    make_private_dirs(data_dir or default_data_dir())
    make_private_dirs(out.parent)
    with KeyStore.for_node(node, data_dir) as st:
        summary = write_ticket(st, out)
    emit(summary, as_json, lambda con: con.print(
        f"wrote import ticket {summary['ticket_id']} for node {node} (store {summary['target_store']}) to {out}. "
        "It holds a secret: carry it to the exporting machine over a trusted channel; it is good for one export."))


@keys_app.command("export")
@handle_errors
def export(node: str = typer.Option(..., "--node", "-n", help="Node whose store gives up the bits."),
           pair: str = typer.Option(..., "--pair", "-p", help="Pair, e.g. C1-C2."),
           ticket_file: Path = typer.Option(..., "--ticket", "-t", exists=True, dir_okay=False,
                                            help="Import ticket from the target store (`labqfl keys ticket`)."),
           out: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Export file to create (never overwritten)."),
           bits: int | None = typer.Option(None, "--bits", help="Number of bits (default: every free bit)."),
           purpose: str = typer.Option(
               "general", "--purpose",
               help="Pool to move: general (default), auth, fl, etsi, or all. The auth pool is what the pair's "
                    "distillation authenticates its blocks with: move it only with the partner's copy."),
           data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Move free key bits of a pair out of a node's store into an authenticated file bound to the ticket's store."""
    from labqfl.keystore import KeyStore
    from labqfl.keystore.certs import make_private_dirs
    from labqfl.keystore.transfer import export_keys, read_ticket

    tk = read_ticket(ticket_file)
    _nodes_or_all([node], data_dir)
    make_private_dirs(out.parent)  # for key bits in clear: 0700 whatever the umask (review s35 F3)
    with KeyStore.for_node(node, data_dir, create=False) as st:  # the source holds key: never made here
        summary = export_keys(st, pair, out, ticket=tk, nbits=bits, purpose=None if purpose == "all" else purpose,
                              ticket_file=ticket_file)
    def render(con: Any) -> None:
        _print_recovered(con, summary.get("recovered", []))
        con.print(f"exported {summary['nbits']} bits of {pair} from node {node} to {out} (export "
                  f"{summary['export_id']}), importable only by node {summary['target_node']}, store "
                  f"{summary['target_store']}; they are no longer in the source store. The file is key material in "
                  "clear: move it securely, import it, then delete it.")

    emit(summary, as_json, render)


@keys_app.command("abort-export")
@handle_errors
def abort_export(export_id: str = typer.Argument(..., help="Export ID (`labqfl keys status` names it)."),
                 node: str = typer.Option(..., "--node", "-n", help="Node whose store made the export."),
                 data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Give back the bits of an interrupted export that `keys status` holds (another or an unreadable
    file at its path). Only when no copy of the export file exists anywhere: one would hold bits that
    are free again. Its temporary file is removed; the file at its name is never touched."""
    from labqfl.keystore import KeyStore
    from labqfl.keystore.transfer import abort_pending_export

    _nodes_or_all([node], data_dir)
    with KeyStore.for_node(node, data_dir, create=False) as st:
        summary = abort_pending_export(st, export_id)
    emit(summary, as_json, lambda con: con.print(
        f"export {export_id} aborted: {summary['freed_bits']} bits are free in node {node}'s store again"))


@keys_app.command("import")
@handle_errors
def import_(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Export file."),
            node: str | None = typer.Option(None, "--node", "-n", help="Target node (default: the file's target node)."),
            keep_file: bool = typer.Option(False, "--keep-file",
                                           help="Do not overwrite and delete the export file after importing it."),
            data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Add an export file's bits to the store it is bound to (once; any other store refuses it).

    The file is read once: the bits imported are the bits its MAC was checked on. After a successful
    import the file (key bits in clear, refused by every store from now on) is overwritten with zeros
    and deleted, as `keys preshare` does with its secret (unless --keep-file)."""
    import os

    from labqfl.keystore import KeyStore
    from labqfl.keystore.preshare import shred_secret_file
    from labqfl.keystore.transfer import already_imported, import_keys, load_export

    try:
        exp = load_export(file)  # one read (review s33 F2: a header, a MAC and the bits from three reads)
    except DataFormatError as exc:
        raise _import_remains(file, data_dir, exc) from None
    try:
        target = node or exp.header["target_node"]
        _nodes_or_all([target], data_dir)  # an existing store only: a new one could never be the bound target
        with KeyStore.for_node(target, data_dir) as st:
            # a re-run after an import that died before destroying the file (review s38 F3): it can never be
            # imported anywhere again, and holds key live here: destroyed now (unless --keep-file)
            done = already_imported(st, exp)  # that very file (its MAC tag), review s38 K3
            summary = import_keys(st, exp) if done is None else {
                **exp.header, "imported_bits": 0, "store": str(st.path), "recovered": [], "already_imported": done}
    finally:
        exp.wipe()
    problem = None if keep_file else shred_secret_file(file)
    if not keep_file and problem is None:
        with KeyStore.for_node(target, data_dir) as st:
            st.drop_import_file(os.path.abspath(file))
    summary["export_file"] = "kept" if keep_file else ("destroyed" if problem is None else "NOT destroyed")
    if problem is not None:
        summary["warning"] = problem.replace("secret file", "export file")
    emit(summary, as_json, lambda con: _render_import(con, summary, target))


def _import_remains(file: Path, data_dir: Path | None, exc: DataFormatError) -> DataFormatError:
    """``keys import``'s error for a file that is no readable export: if a store of the data dir notes that it
    imported this file (an import stopped while it overwrote the file: review s38 K4), say that what is left of
    it is key in clear, live in that store, and to destroy it; else the read error as it is."""
    from labqfl.keystore import KeyStore
    from labqfl.keystore.transfer import noted_import

    for node in _nodes_or_all(None, data_dir):
        try:
            with KeyStore.for_node(node, data_dir, create=False) as st:
                rec = noted_import(st, file)
        except (KeyStoreError, OSError):
            continue
        if rec is not None:
            return DataFormatError(f"{exc}; this is the file of export {rec['export_id']}, imported into node {node} "
                                   f"({rec['store']}) by an import that stopped before it finished destroying the "
                                   "file: what is left of it holds key bits in clear that are live in that store; "
                                   "nothing was imported: destroy it (overwrite it with zeros and delete it)")
    return exc


def _render_import(con: Any, summary: dict[str, Any], target: str) -> None:
    """``keys import``'s text: what was imported (or that it was already), and what became of the file."""
    done = summary.get("already_imported")
    fate = {"kept": "The export file was kept (--keep-file): it holds key bits in clear"
                    + (", live in that store" if done else "") + "; delete it.",
            "destroyed": "The export file was overwritten and deleted.",
            "NOT destroyed": f"WARNING: {summary.get('warning')}; it holds key bits in clear."}[summary["export_file"]]
    _print_recovered(con, summary.get("recovered", []))
    if done:
        con.print(f"export {summary['export_id']} was already imported into node {target} ({summary['store']}) at "
                  f"{done['imported']}, {done['nbits']} bits (an earlier `keys import` of this file stopped before it "
                  "destroyed the file?): nothing was imported again. " + fate)
    else:
        con.print(f"imported {summary['imported_bits']} bits of {summary['pair']} into node {target} "
                  f"({summary['store']}). " + fate)


#: what a block ID may be (labqfl.keystore.KeyStore.add_blocks: a non-empty string of at most 128 characters;
#: the IDs labqfl makes are UUIDs, ``preshared-…`` and ``…-auth``)
_BLOCK_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _check_block_id(block_id: str) -> str:
    if not 0 < len(block_id) <= 128 or not set(block_id) <= _BLOCK_ID_CHARS:
        raise KeyStoreError(f"block ID {block_id!r} is not a block ID; expected the ID of one key block as "
                            "`labqfl keys status` names it (letters, digits, '-', '_', '.', ':'; at most 128 "
                            "characters), e.g. the one of two overlapping blocks to retire")
    return block_id


def _retire_holders(block_id: str, nodes: list[str], data_dir: Path | None) -> tuple[list[str], dict[str, str]]:
    """The nodes among ``nodes`` whose store holds ``block_id``, and ``{node: error}`` for stores not read."""
    from labqfl.keystore import KeyStore

    holders, unread = [], {}
    for n in nodes:
        try:
            with KeyStore.for_node(n, data_dir, create=False) as st:
                if st.has_block(block_id):
                    holders.append(n)
        except KeyStoreError as exc:
            unread[n] = str(exc)
    return holders, unread


def _unknown_block(block_id: str, nodes: list[str], data_dir: Path | None, unread: dict[str, str]) -> KeyStoreError:
    """The error for a block no store of ``nodes`` holds: blocks whose ID starts with it named, unread stores too."""
    from labqfl.keystore import KeyStore, default_data_dir

    like = []
    for n in nodes:
        if n not in unread:
            with KeyStore.for_node(n, data_dir, create=False) as st:
                like += [b["block_id"] for b in st.blocks() if b["block_id"].startswith(block_id)]
    hint = (f"; block(s) whose ID begins so: {', '.join(sorted(set(like))[:5])}: give the whole ID" if like else
            "; `labqfl keys status` names the overlapping blocks, `--json` every block's ID")
    ddir = data_dir or default_data_dir()
    if not nodes:
        return KeyStoreError(f"no block {block_id}: there are no key stores under {ddir} (keystore/ is missing or "
                             "empty); give the data dir that holds the block (--data-dir or $LABQFL_DATA_DIR)")
    skipped = "".join(f"; node {n}'s store was not read: {e}" for n, e in unread.items())
    return KeyStoreError(f"no block {block_id} in the key stores of node(s) {', '.join(nodes)} under {ddir}{hint}"
                         f"{skipped}; nothing was retired")


def _retire_notes(block_id: str, pair: str, holders: list[str], done: dict[str, dict[str, Any]],
                  data_dir: Path | None) -> list[str]:
    """What the operator must still do: the pair's other end where it was not retired (a store of another data dir,
    or one left out by --node), and the stores that imported bits of the block exported from here earlier."""
    from labqfl.keystore import list_node_stores

    here = list_node_stores(data_dir)
    ends = [e for e in pair.split("-") if e not in holders]
    left, _ = _retire_holders(block_id, [e for e in ends if e in here], data_dir)
    notes = [f"node {e} (the pair's other end) holds the block too and was left as it is (--node): retire it there "
             f"too (`labqfl keys retire {block_id} --node {e}`), or its copy of the key stays free there" for e in left]
    notes += [f"node {e} (the pair's other end) has no store under this data dir: retire the block in its store too "
              f"(`labqfl keys retire {block_id} --node {e} --data-dir` its data dir), or its copy of the key stays "
              "free there (this end refuses any use of it)" for e in ends if e not in here]
    for node, r in done.items():
        for export_id, n in r.get("exported_bits", {}).items():
            notes.append(f"{n} bits of it left node {node}'s store earlier in export {export_id}: they are free in "
                         "the store that imported them: retire the block there too")
    return notes


@keys_app.command("retire")
@handle_errors
def retire(block_id: str = typer.Argument(..., help="ID of the key block to retire, as `labqfl keys status` names it "
                                          "(e.g. one of two overlapping blocks)."),
           node: list[str] = typer.Option(None, "--node", "-n",
                                          help="Node store(s) to retire it in (default: every store of the data dir "
                                               "that holds it: both ends of its pair)."),
           reason: str = typer.Option("retired with `labqfl keys retire`", "--reason",
                                      help="Why: recorded with the retirement in each store."),
           force: bool = typer.Option(False, "--force",
                                      help="Retire it even though keys not finished hold bits of it (a running KME, "
                                           "training run or node): those keys are voided, lost to whoever holds them."),
           data_dir: Path | None = DATA_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Retire a key block for good: its unused bits overwritten and never handed out (e.g. one of two blocks
    distilled from the same raw slots).

    `keys status` flags such blocks: their keys are not independent. In every store that holds it (both ends of
    its pair by default), the block and its authentication refill (one distillation) have their unused bits overwritten with zeros and
    marked spent, in one transaction per store, all stores' write locks held from the first check to the last
    commit, then the WAL checkpoint; the retirement is recorded, so no import
    brings them back and their raw slots stay distilled. Refused, with nothing retired anywhere: an unknown ID,
    bits being exported, and bits reserved for keys not finished (unless --force). Key bits are never printed."""
    from labqfl.keystore import KeyStore
    from labqfl.keystore.store import retire_in_stores

    _check_block_id(block_id)
    nodes = _nodes_or_all(node, data_dir)
    holders, unread = _retire_holders(block_id, nodes, data_dir)
    if not holders:
        raise _unknown_block(block_id, nodes, data_dir, unread)
    stores: list[KeyStore] = []
    try:  # every holder's write lock from the first check to the last commit (review s39 K1)
        for n in holders:
            stores.append(KeyStore.for_node(n, data_dir, create=False))
        res = retire_in_stores(stores, block_id, reason, force=force)
        done = {n: res[n] for n in holders}
        for st in stores:
            if done[n := str(st.node)]["scrub"]["pending"]:  # a reader's old snapshot: the retry may finish it
                st.wait_scrubbed(5.0)
                done[n]["scrub"] = st.scrub_status()
    finally:
        for st in stores:
            st.close()
    pair = done[holders[0]]["pair"]
    summary = {"block_id": block_id, "pair": pair, "nodes": done,
               "notes": _retire_notes(block_id, pair, holders, done, data_dir), "not_read": unread}
    emit(summary, as_json, lambda con: _render_retire(con, summary))


def _render_retire(con: Any, summary: dict[str, Any]) -> None:
    for n, r in summary["nodes"].items():
        names = [b["block_id"] for b in r["blocks"]]
        what = f"block {names[0]}" + (f" (with {', '.join(names[1:])}, of the same distillation)" if names[1:] else "")
        if r["already_retired"]:
            con.print(f"node {n}: {what} of pair {r['pair']} was retired before; nothing to do", soft_wrap=True)
            continue
        voided = f"; {len(r['voided_keys'])} key(s) voided ({', '.join(r['voided_keys'])})" if r["voided_keys"] else ""
        con.print(f"node {n}: retired {what} of pair {r['pair']} in {r['store']}: {r['discarded_bits']} unused bits "
                  f"overwritten with zeros and marked spent{voided}; never handed out, and no import brings them "
                  "back", soft_wrap=True)
        if r.get("handed_out_bits"):
            con.print(f"  NOTE: {r['handed_out_bits']} bits of it were handed out (or discarded) before: retiring "
                      "cannot recall keys already delivered from it", soft_wrap=True)
        if r["scrub"]["pending"]:
            con.print(f"  WARNING: node {n}: WAL checkpoint PENDING: a reader of the store holds an old snapshot, so "
                      "the overwritten bits are still in its database files. They stay there until the reader has "
                      "left; then a labqfl process holding the store open finishes the checkpoint within a few "
                      "seconds, even when idle (keystore-scrub-watch), and otherwise the next process to open it "
                      "does (the store records the pending checkpoint): once the reader has left, run `labqfl keys "
                      "status` to check (it says 'WAL checkpointed')", soft_wrap=True)
    for note in summary["notes"]:
        con.print(f"  NOTE: {note}", soft_wrap=True)
    for n, e in summary["not_read"].items():
        con.print(f"  NOTE: node {n}'s store was not read ({e}): if it holds the block, retire it there once it "
                  "can be read", soft_wrap=True)


def _station_pair(pair: str, config: Path | None) -> tuple[str, str]:
    """``pair`` split into (Ci, Cj) after checking it is a scheduled pair of the station, in the
    station's order (the pipeline's pair names: Ci before Cj on the loop): ``C2-C1`` gives (C1, C2)."""
    from labqfl.config import load_station_config

    cfg = load_station_config(config)
    a, sep, b = pair.partition("-")
    if not sep or not a or not b or a == b:
        raise KeyStoreError(f"pair name {pair!r} is not of the form 'Ci-Cj' (e.g. C1-C2)")
    where = f"station {cfg.name!r}" + (f" ({config})" if config else " (the embedded default; give --config)")
    missing = [n for n in (a, b) if n not in cfg.client_names]
    if missing:
        raise KeyStoreError(f"pair {pair}: node(s) {', '.join(missing)} are not clients of {where} (the nodes whose "
                            f"key stores this command loads); clients are {', '.join(cfg.client_names)}")
    names = [f"{i}-{j}" for i, j in cfg.pairs()]
    if pair not in names:
        if f"{b}-{a}" in names:  # C2-C1 is C1-C2, as keyrate and calibrate read it (CLI review s32 L2)
            return b, a
        raise KeyStoreError(f"pair {pair} is not scheduled on {where}; its pairs are {', '.join(names)}")
    return a, b


@keys_app.command("preshare")
@handle_errors
def preshare(pair: str = typer.Option(..., "--pair", "-p", help="Pair, e.g. C1-C2 (C2-C1 names the same pair)."),
             file: Path = typer.Option(..., "--file", "-f",
                                       help="The pair's pre-shared secret: raw random bytes, each 8 key bits (MSB first), "
                                            "delivered out of band. At least 48 bytes; at most 1 MiB; loaded once only; "
                                            "a text file (JSON, TOML, …) is refused and left as it is."),
             keep_file: bool = typer.Option(False, "--keep-file",
                                            help="Do not overwrite and delete the secret file after loading it."),
             config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION,
             as_json: bool = JSON_OPTION) -> None:
    """Load a pair's pre-shared authentication secret into BOTH nodes' stores (pool auth).

    The distiller authenticates a pair's first block with this key (then refills the pool from
    each block's own key); use with `labqfl distill --no-auth-bootstrap`. The pair must be one
    of the station's (--config) pairs, named in either order. A secret may be used only once: after a
    successful load the file is overwritten with zeros and deleted (unless --keep-file), and a
    secret that any store of the data dir already loaded (for any pair) is refused. Key bits are
    never printed.
    """
    from labqfl.keystore import KeyStore, default_data_dir
    from labqfl.keystore.certs import make_private_dirs
    from labqfl.keystore.preshare import (
        check_secret_unused,
        half_load_in,
        load_preshared_auth,
        read_secret_file,
        shred_secret_file,
    )

    a, b = _station_pair(pair, config)
    pair = f"{a}-{b}"
    bits = read_secret_file(file)
    ddir = data_dir or default_data_dir()
    make_private_dirs(ddir)  # a new data dir: 0700 whatever the umask (review s35 F3)
    try:
        # every store of the data dir, before any is created; a load of this secret that a crash left at one
        # of the pair's stores only is completed, not refused (review s33 F10)
        check_secret_unused(ddir, bits, source=file.name, resume=half_load_in(ddir, pair, bits))
        with KeyStore.for_node(a, ddir) as si, KeyStore.for_node(b, ddir) as sj:
            summary = load_preshared_auth(si, sj, pair, bits, source=file.name)
    finally:
        bits[:] = 0
    problem = None if keep_file else shred_secret_file(file)
    summary["secret_file"] = "kept" if keep_file else ("destroyed" if problem is None else "NOT destroyed")
    if problem is not None:
        summary["warning"] = problem
    fate = {"kept": "The secret file was kept (--keep-file): destroy it, it must not be loaded again.",
            "destroyed": "The secret file was overwritten and deleted.",
            "NOT destroyed": f"WARNING: {problem}: it must not be loaded again."}[summary["secret_file"]]
    done = (f"completed an interrupted load: added block {summary['block_id']} (held by one store only) to node "
            f"{summary['completed']}; " if summary.get("completed") else "")
    emit(summary, as_json, lambda con: con.print(
        done + f"loaded {summary['nbits']} pre-shared bits of {pair} from {file.name} into the auth pools of "
        f"{a} ({summary['stores'][a]}) and {b} ({summary['stores'][b]}) as block {summary['block_id']}; "
        f"auth pool now {a} {summary['auth_available_bits'][a]} bits, {b} {summary['auth_available_bits'][b]} bits. "
        + fate))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
