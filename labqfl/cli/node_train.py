"""``labqfl node train`` (and ``labqfl node sign-spec``: the run's training spec signed beforehand by the operator,
:mod:`labqfl.fl.flower.specsig`): the operator trains a federated model over a running node network — a
``labqfl node server`` and one ``labqfl node supernode`` per client of the station, on any hosts —
with the certificate ``ctl`` (``labqfl node certs DIR --node ctl``), as ``labqfl run`` does over the
nodes it starts itself (:func:`labqfl.nodes.fl.train_on_server`). The training options are those of
``labqfl train`` (the same option objects, :data:`TRAIN`) and pass the same checks
(:class:`~labqfl.app.training.TrainingSetup`); the clients are the station's. The operator opens no
key store: each SuperNode draws its pads from its own client's store. The report, the run folder
(``metrics.json``, plots) and ``--json`` are those of ``labqfl train``, plus the network's part
(``server``, ``server_run``, ``flower``, ``wall_s``)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import typer

from labqfl.cli.common import JSON_OPTION, console, emit, fail, handle_errors
from labqfl.cli.node import STATION
from labqfl.cli.train import train as _train_command

#: ``labqfl train``'s option objects by parameter name: ``node train`` declares the same options with them
TRAIN: dict[str, Any] = {n: p.default for n, p in inspect.signature(_train_command).parameters.items()}

KEYS = typer.Option("qkd", "--keys", help="Mask key source: qkd (default: each SuperNode draws the pads from its "
                    "own client's key store) or csprng (per-round X25519 key agreement + AES-CTR masks: "
                    "computational, for tests without distilled key).")
MNIST_DIR = typer.Option(None, "--mnist-dir", metavar="DIR", help="MNIST folder (the four IDX files or mnist.npz) "
                         "at this path on the server's host and every SuperNode's host; default: the embedded 5k subset.")
TIMEOUT = typer.Option(3600.0, "--timeout", min=1.0, metavar="SECONDS",
                       help="Longest wait for the whole Flower run on the server node [s].")
SIGNED_SPEC = typer.Option(None, "--signed-spec", metavar="FILE", dir_okay=False,
                           help="A spec signed beforehand with `labqfl node sign-spec` (the training options must "
                                "match it); default: node train signs the run's spec itself with node-ctl.key.")
VALID_HOURS = typer.Option(24.0, "--valid-hours", min=0.001, help="How long the signed spec is valid [h]: the nodes "
                           "refuse it afterwards, also in the middle of a run (at most 720 h, 30 days).")
JOB_ID = typer.Option(None, "--job-id", metavar="ID", help="The training job this spec belongs to (signed; letters, "
                      "digits, '_.:-'): with self-masks each SuperNode signs one survivor set per job and round, "
                      "under every spec of the job. Default: derived from the signed settings that determine local "
                      "training (the same settings, the same job: a retry is the same job); node train "
                      "--signed-spec: the signed spec's. A new ID for the same settings lets the server difference "
                      "two jobs' sums of one round (docs/secure_aggregation.md §9).")
COLLUDERS = typer.Option(None, "--colluders", min=0, metavar="C", help="With --self-masks: how many clients colluding "
                         "with the server the consistency stage tolerates (signed): each node unmasks only a survivor "
                         "set that max(t, 2, floor((N + C)/2) + 1) survivors signed (2: min_survivors). Default: t - 1 (the "
                         "threshold's assumption); 0 tolerates more dropouts (N = 3: one) but no colluder.")
SPEC_OUT = typer.Option(..., "--out", "-o", metavar="FILE", dir_okay=False, help="Where to write the signed spec (JSON).")


def add_train(node_app: typer.Typer) -> None:
    @node_app.command("train")
    @handle_errors
    def train(
        server: str = typer.Option(..., "--server", help="HOST:PORT of the running server node's ctl service "
                                   "(its NODE line; `node server --json`: address)."),
        certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem and the operator's node-ctl.pem/.key "
                                   "(`labqfl node certs DIR --node ctl`)."),
        server_name: str = typer.Option(None, "--server-name", help="The server node's certificate name "
                                        "(default: the station's [fl_server] name, else 'server')."),
        station: Path = STATION,
        task: str = TRAIN["task"], q: int = TRAIN["q"], rounds: int = TRAIN["rounds"], keys: str = KEYS,
        local_epochs: int | None = TRAIN["local_epochs"], lr: float | None = TRAIN["lr"],
        batch_size: int | None = TRAIN["batch_size"], clip: float | None = TRAIN["clip"], seed: int = TRAIN["seed"],
        non_iid: bool = TRAIN["non_iid"], alpha: float = TRAIN["alpha"], graph: str = TRAIN["graph"],
        k: int = TRAIN["k"], mnist_dir: Path | None = MNIST_DIR, digits: str = TRAIN["digits"],
        samples_per_client: int = TRAIN["samples_per_client"], test_size: int = TRAIN["test_size"],
        self_masks: bool = TRAIN["self_masks"], threshold: int | None = TRAIN["threshold"],
        dp_epsilon: float | None = TRAIN["dp_epsilon"], dp_delta: float = TRAIN["dp_delta"],
        dp_honest: int = TRAIN["dp_honest"], dp_clip: float | None = TRAIN["dp_clip"],
        timeout: float = TIMEOUT, out: Path | None = TRAIN["out"], signed_spec: Path | None = SIGNED_SPEC,
        job_id: str | None = JOB_ID, colluders: int | None = COLLUDERS, as_json: bool = JSON_OPTION,
    ) -> None:
        """As the operator (certificate 'ctl'): train over a running server node and the clients' SuperNodes;
        report and run folder as `labqfl train` (docs/nodes.md, "Separate hosts")."""
        from labqfl.config import load_station_config
        from labqfl.nodes.common import check_address

        check_address(server, "--server")
        cfg = load_station_config(station)
        settings = _settings(**{n: v for n, v in locals().items() if n in _SETTINGS}, names=tuple(cfg.client_names))
        fs = cfg.fl_server
        summary = run_training(settings, server, certs, server_name or (fs.name if fs else "server"),
                               mnist_dir=mnist_dir, timeout_s=timeout, runs_dir=out, quiet=as_json,
                               signed_spec=signed_spec, job_id=job_id, colluders=colluders)
        emit(summary, as_json, lambda con: render(con, summary))

    @node_app.command("sign-spec")
    @handle_errors
    def sign_spec_command(
        certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem and the operator's node-ctl.pem/.key "
                                   "(`labqfl node certs DIR --node ctl`)."),
        out: Path = SPEC_OUT, valid_hours: float = VALID_HOURS, station: Path = STATION,
        task: str = TRAIN["task"], q: int = TRAIN["q"], rounds: int = TRAIN["rounds"], keys: str = KEYS,
        local_epochs: int | None = TRAIN["local_epochs"], lr: float | None = TRAIN["lr"],
        batch_size: int | None = TRAIN["batch_size"], clip: float | None = TRAIN["clip"], seed: int = TRAIN["seed"],
        non_iid: bool = TRAIN["non_iid"], alpha: float = TRAIN["alpha"], graph: str = TRAIN["graph"],
        k: int = TRAIN["k"], mnist_dir: Path | None = MNIST_DIR, digits: str = TRAIN["digits"],
        samples_per_client: int = TRAIN["samples_per_client"], test_size: int = TRAIN["test_size"],
        self_masks: bool = TRAIN["self_masks"], threshold: int | None = TRAIN["threshold"],
        dp_epsilon: float | None = TRAIN["dp_epsilon"], dp_delta: float = TRAIN["dp_delta"],
        dp_honest: int = TRAIN["dp_honest"], dp_clip: float | None = TRAIN["dp_clip"], job_id: str | None = JOB_ID,
        colluders: int | None = COLLUDERS, as_json: bool = JSON_OPTION,
    ) -> None:
        """As the operator (certificate 'ctl'): sign a training spec (participants, graph, self-masks, threshold,
        DP, rounds, task, q, key mode) for `labqfl node train --signed-spec`; every SuperNode follows no other
        settings (docs/secure_aggregation.md §9)."""
        from labqfl.config import load_station_config

        cfg = load_station_config(station)
        settings = _settings(**{n: v for n, v in locals().items() if n in _SETTINGS}, names=tuple(cfg.client_names))
        doc = sign_training_spec(settings, certs, mnist_dir=mnist_dir, valid_s=valid_hours * 3600.0, out=out,
                                 job_id=job_id, colluders=colluders)
        emit(doc, as_json, lambda con: con.print(
            f"signed spec {doc['spec_id']} (operator ctl), valid until {doc['expires']}: {doc['file']}\n"
            + (f"{doc['consistency']}\n" if doc.get("consistency") else "") + ", ".join(f"{k_}={v!r}" for k_, v in doc["settings"].items()), soft_wrap=True))


#: the training options both commands turn into :class:`~labqfl.app.training.TrainingSettings`
_SETTINGS = ("task", "q", "rounds", "keys", "seed", "local_epochs", "lr", "batch_size", "clip", "graph", "k",
             "self_masks", "threshold", "dp_epsilon", "dp_delta", "dp_honest", "dp_clip", "non_iid", "alpha",
             "digits", "samples_per_client", "test_size")


def _settings(**kw: Any) -> Any:
    """``labqfl train``'s settings of a run over nodes (the Flower engine, no preflight: the operator opens no store)."""
    from labqfl.app.training import TrainingSettings

    return TrainingSettings(**kw, engine="flower", preflight=False)


#: when a dropout is tolerated (review s38 G1): the server asks every survivor's signature and t chosen share
#: holders' unmask, so a client lost after its masked upload arrived aborts the round
DROPOUT_WHEN = ("counting a client lost before its masked upload arrives (one lost after it, at the consistency or unmask "
                "stage, aborts the round and stops the job)")


#: the stages of a round at which a lost client is dropped and the round goes on (``dropouts_tolerated_stages``)
DROPOUT_STAGES = ("keys", "refs", "mask")


def consistency_line(spec: Any) -> str:
    """With self-masks: the tolerated colluders c and the signatures (survivors) ``need`` of the consistency
    stage (:meth:`~labqfl.fl.flower.spec.FlowerSpec.consistency_need`), in words; "" without self-masks."""
    if not spec.self_masks:
        return ""
    c, t, need = spec.tolerated_colluders(), spec.full_threshold(), spec.consistency_need()
    why = "default t - 1" if spec.colluders < 0 else "--colluders"
    return (f"self-masks: t = {t}, {c} colluding client(s) tolerated ({why}), so every round needs {need} of "
            f"{spec.clients} clients to survive and sign its survivor set ({spec.clients - need} dropout(s) "
            f"tolerated), {DROPOUT_WHEN}; job {spec.job()}")


def _node_spec(settings: Any, mnist_dir: Path | None, job_id: str | None = None,
               colluders: int | None = None) -> tuple[Any, Any]:
    """(the checked :class:`~labqfl.app.training.TrainingSetup`, the Flower spec a run over nodes sends) of
    ``settings``, as ``labqfl run`` over nodes makes it, for training job ``job_id`` (None: the job its
    settings give, :meth:`~labqfl.fl.flower.spec.FlowerSpec.derived_job_id`; "" stays "", as a spec signed
    before job IDs existed) tolerating ``colluders`` (None: t − 1); a spec the ServerApp would refuse fails
    here."""
    import dataclasses

    from labqfl.app.training import TrainingSetup
    from labqfl.nodes.runjob import flower_spec_for

    setup = TrainingSetup(settings)  # validates; opens no key store, loads no data
    spec = dataclasses.replace(flower_spec_for(setup, settings.client_names, data_dir=str(mnist_dir or "")),
                               keys=settings.keys, job_id="", colluders=-1 if colluders is None else colluders)
    spec = dataclasses.replace(spec, job_id=spec.derived_job_id() if job_id is None else job_id)
    spec.secagg()
    if colluders is not None and colluders >= 0:  # as labqfl run: c colluders must stay below the threshold t
        from labqfl.mainjob import check_colluders

        check_colluders(spec, colluders)
    return setup, spec


def sign_training_spec(settings: Any, certs: Path, *, mnist_dir: Path | None, valid_s: float,
                       out: Path, job_id: str | None = None, colluders: int | None = None) -> dict[str, Any]:
    """Sign the Flower spec of ``settings`` for training job ``job_id`` (default: the one its settings give,
    :meth:`~labqfl.fl.flower.spec.FlowerSpec.derived_job_id`), tolerating ``colluders`` (default t − 1) with the
    operator's ``node-ctl`` key of ``certs`` and write it to ``out`` (:mod:`labqfl.fl.flower.specsig`); returns
    what was signed (ID, expiry, settings, file)."""
    from labqfl.errors import ConfigError
    from labqfl.nodes.fl import operator_signed_spec

    _, spec = _node_spec(settings, mnist_dir, job_id or None, colluders)
    try:
        signed = operator_signed_spec(certs, spec.to_config(), valid_s)
    except ConfigError as exc:
        raise fail(_credentials_hint(str(exc))) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(signed.to_json() + "\n", encoding="utf-8")
    return {"spec_id": signed.spec_id, "expires": f"{signed.expires:%Y-%m-%d %H:%M:%S} UTC", "file": str(out),
            "settings": signed.settings, "consistency": consistency_line(spec)}


def _load_signed(path: Path, spec: Any) -> Any:
    """The signed spec of ``--signed-spec`` (:meth:`~labqfl.fl.flower.specsig.SignedSpec.from_file`), after
    checking that it is not expired and that the training options give exactly its settings."""
    import datetime

    from labqfl.errors import ConfigError
    from labqfl.fl.flower.specsig import SignedSpec, spec_departures

    signed = SignedSpec.from_file(path)
    if signed.expires < datetime.datetime.now(datetime.UTC):
        raise ConfigError(f"--signed-spec {path}: spec {signed.spec_id} expired at {signed.expires:%Y-%m-%d %H:%M:%S} "
                          "UTC; sign a new one (labqfl node sign-spec)")
    if bad := spec_departures(signed, spec):
        raise ConfigError(f"--signed-spec {path}: the training options depart from signed spec {signed.spec_id} "
                          "(field: options, signed): " + "; ".join(f"{k}: {a!r}, {b!r}" for k, (a, b) in bad.items()))
    return signed


def run_training(settings: Any, server: str, certs: Path, server_name: str, *, mnist_dir: Path | None,
                 timeout_s: float, runs_dir: Path | None, quiet: bool, signed_spec: Path | None = None,
                 job_id: str | None = None, colluders: int | None = None) -> dict[str, Any]:
    """Check ``settings`` (a :class:`~labqfl.app.training.TrainingSettings`) as ``labqfl train`` does, make the
    Flower spec as ``labqfl run`` over nodes does, load the operator's credentials, open the session to the
    server node, then (the server reached) make the run folder and train; the summary, written as the run
    folder's ``metrics.json`` with ``labqfl train``'s plots. The spec goes out signed by the operator:
    ``signed_spec`` (a file of ``labqfl node sign-spec``, whose settings the options must give), else signed
    here with ``certs``' ``node-ctl`` key (:func:`labqfl.nodes.fl.train_on_server`). ``job_id``: the training
    job (``spec.job_id``) and ``colluders``: default the signed spec's (verbatim: "" for a spec signed before job
    IDs existed), else the job the settings give and t − 1."""
    from labqfl.cli.train import plot_training
    from labqfl.errors import ConfigError, LabqflError
    from labqfl.nodes.fl import train_on_server
    from labqfl.runs import RunRecord

    if signed_spec is not None:
        from labqfl.fl.flower.specsig import SignedSpec

        given = SignedSpec.from_file(signed_spec).settings
        job_id = str(given.get("job_id", "")) if job_id is None else job_id
        colluders = int(given.get("colluders", -1)) if colluders is None else colluders
    setup, spec = _node_spec(settings, mnist_dir, job_id, colluders)  # one the ServerApp would refuse fails here
    names = settings.client_names
    signed = _load_signed(signed_spec, spec) if signed_spec is not None else None
    rec: list[Any] = []

    def opened() -> None:
        rec.append(RunRecord.create(f"node-train-{settings.task}", runs_dir=runs_dir))
        if not quiet:
            console.print(f"training {settings.task} over the server node {server_name} at {server}: "
                          f"{len(names)} SuperNodes ({', '.join(names)}), {settings.rounds} round(s), q={settings.q}, "
                          f"keys={settings.keys}", soft_wrap=True)
            if line := consistency_line(spec):
                console.print(line, soft_wrap=True)

    try:
        res = train_on_server(server, certs, spec.to_config(), timeout_s=timeout_s, server_name=server_name,
                              on_session=opened, signed_spec=signed)
        summary = training_summary(setup, res, server, server_name)
        if rec:
            summary["run_dir"] = str(rec[0].path)
            summary["plots"] = plot_training(rec[0], summary, f"{settings.task} over nodes, N={len(names)}, q={settings.q}, "
                                                      f"keys={summary['key_source']}")
            rec[0].write_metrics(summary)
    except ConfigError as exc:  # the operator's certificate folder
        raise fail(_credentials_hint(str(exc))) from None
    except LabqflError as exc:  # a node's answer may run over lines (the Flower run's output)
        raise fail(_one_line(str(exc), server_name)) from None
    finally:
        for r in rec:
            r.close()
            _drop_if_empty(r.path)
    return summary


def _drop_if_empty(path: Path) -> None:
    """Remove a run folder a failed training left with nothing in it (no metrics, an empty log)."""
    import shutil

    if not (path / "metrics.json").exists() and all(
            f.stat().st_size == 0 for f in path.rglob("*") if f.is_file()):
        shutil.rmtree(path, ignore_errors=True)


def _credentials_hint(message: str) -> str:
    """A credentials error, with where the operator's files come from."""
    if "node-ctl." in message or "ca.pem" in message:
        return f"{message}; the operator's certificate: labqfl node certs DIR --node ctl (with the network's CA)"
    return message


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): ")


def _one_line(message: str, server_name: str) -> str:
    """One line from a node's error, which may carry the Flower run's output (colour codes, a traceback) after
    its first line: that line and the output's last exception line (else its last line), with where the whole
    output is kept."""
    lines = [ln for ln in (_ANSI.sub("", x).strip() for x in message.splitlines()) if ln]
    if len(lines) <= 1:
        return lines[0] if lines else message.strip()
    head = lines[0].removesuffix("its output ends:").rstrip("; :")
    why = ([ln for ln in lines[1:] if _EXCEPTION_LINE.match(ln)] or lines[-1:])[-1]
    return (f"{head}: {why} (the whole output: nodes/{server_name}/flower/flwr-run-*.log in the server node's "
            "data folder)")


def training_summary(setup: Any, res: dict[str, Any], server: str, server_name: str) -> dict[str, Any]:
    """``labqfl train``'s summary of a run the server node's ServerApp reported (``res``), with what the
    setup knows (key cost, self-masks, local and secagg settings) and the network's part."""
    from labqfl.fl.selfmask import SELF_MASK_RANDOMNESS, share_prime

    s = setup.settings
    out = {k: v for k, v in res.items() if k != "final_params"}
    out.update(
        key_cost_per_round=setup.key_cost_per_round(),
        self_masks=({"enabled": True, "threshold": setup.share_threshold, "share_field_prime": share_prime(s.q),
                     "randomness": SELF_MASK_RANDOMNESS} if s.self_masks else {"enabled": False}),
        clients=len(setup.names), client_names=list(setup.names), q=s.q, rounds_requested=s.rounds,
        rounds_run=len(res.get("rounds") or []), seed=s.seed, loss=setup.model.loss_name,
        local={"epochs": setup.local.epochs, "lr": setup.local.lr, "batch_size": setup.local.batch_size,
               "optimizer": "adam"},
        secagg=setup.secagg.as_dict(), noise=None, server=server, server_name=server_name,
        security=mask_security(s.keys, s.self_masks))
    return out


#: the last sentence of a node run's security line: what the operator's report can and cannot vouch for
#: (review s34 F8; the nodes do not report the key mode or mask settings they used). Since s35 the settings are
#: signed by this operator (labqfl.fl.flower.specsig) and every SuperNode started by `labqfl node supernode`
#: (the network CA configured) refuses any message that departs from them
NODE_RUN_TRUST = ("The key mode and the mask settings (participants, graph, self-masks and threshold, DP, rounds) "
                  "reach the nodes in a spec signed by this operator (certificate ctl), and every SuperNode with the "
                  "network CA refuses any server message that departs from it or an expired one, but no node reports "
                  "what it used; each SuperNode {}.")


def mask_security(keys: str, self_masks: bool = False) -> str:
    """What the masks of a run over nodes rest on, for the key mode this operator asked for, and (its last
    sentence, :data:`NODE_RUN_TRUST`) where that rests on the nodes. The operator opens no key store, so for
    ``qkd`` it can name where each key's provenance is recorded, not the provenance itself."""
    from labqfl.app.training import SELF_MASK_SECURITY

    if keys == "qkd":
        head = ("asked for qkd: one-time-pad masks with QKD keys each client's SuperNode draws from its own key store "
                "(this operator opens none; what those keys rest on, simulated or hardware physical layer and QRNG, "
                "CSPRNG or seeded client randomness, is recorded per block in each client's store: labqfl keys status "
                "--data-dir <its data folder> on its host)")
        node = "masks with keys from its own key store and refuses another key mode"
    else:
        head = ("asked for csprng: computational: per-round X25519 key agreement (OS randomness) expanded with "
                "AES-256-CTR into the masks, no QKD key; each SuperNode signs its public key with its node "
                "certificate and derives nothing from a partner's key not signed by that partner under the network "
                "CA, so the server relays the keys but cannot substitute them")
        node = "refuses a key mode other than its own"
    return head + (SELF_MASK_SECURITY if self_masks else "") + ". " + NODE_RUN_TRUST.format(node)


def _dropped(client: str, reasons: dict[str, str]) -> str:
    """A dropped client, with the server's reason (a malformed upload, no reply, ...) where the round has it."""
    why = reasons.get(client)
    return f"{client} ({why})" if why else client


def render(con: Any, summary: dict[str, Any]) -> None:
    """``labqfl train``'s report, then the network's part: the server node, its run, the Flower rounds."""
    from labqfl.cli.train import render_training

    render_training(con, summary)
    fl = summary.get("flower") or []
    dropped = [f"round {r['round']}: " + ", ".join(_dropped(c, r.get("dropped_reasons") or {})
                                                   for c in [*r["dropped_before_masking"], *r["dropped_after_masking"]])
               for r in fl if r["dropped_before_masking"] or r["dropped_after_masking"]]
    con.print(f"over the server node {summary['server_name']} at {summary['server']} (its run {summary['server_run']}): "
              f"{summary['rounds_run']} round(s) in {summary['wall_s']:.1f} s wall; clients dropped: "
              + ("; ".join(dropped) if dropped else "none"), soft_wrap=True)
    con.print(f"security: {summary['security']}", soft_wrap=True)
