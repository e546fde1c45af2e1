"""``labqfl node train``: the operator trains a federated model over a running node network — a
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
        timeout: float = TIMEOUT, out: Path | None = TRAIN["out"], as_json: bool = JSON_OPTION,
    ) -> None:
        """As the operator (certificate 'ctl'): train over a running server node and the clients' SuperNodes;
        report and run folder as `labqfl train` (docs/nodes.md, "Separate hosts")."""
        from labqfl.app.training import TrainingSettings
        from labqfl.config import load_station_config
        from labqfl.nodes.common import check_address

        check_address(server, "--server")
        cfg = load_station_config(station)
        settings = TrainingSettings(
            task=task, names=tuple(cfg.client_names), q=q, rounds=rounds, keys=keys, seed=seed,
            local_epochs=local_epochs, lr=lr, batch_size=batch_size, clip=clip, graph=graph, k=k,
            self_masks=self_masks, threshold=threshold, dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_honest=dp_honest,
            dp_clip=dp_clip, engine="flower", preflight=False, non_iid=non_iid, alpha=alpha, digits=digits,
            samples_per_client=samples_per_client, test_size=test_size)
        fs = cfg.fl_server
        summary = run_training(settings, server, certs, server_name or (fs.name if fs else "server"),
                               mnist_dir=mnist_dir, timeout_s=timeout, runs_dir=out, quiet=as_json)
        emit(summary, as_json, lambda con: render(con, summary))


def run_training(settings: Any, server: str, certs: Path, server_name: str, *, mnist_dir: Path | None,
                 timeout_s: float, runs_dir: Path | None, quiet: bool) -> dict[str, Any]:
    """Check ``settings`` (a :class:`~labqfl.app.training.TrainingSettings`) as ``labqfl train`` does, make the
    Flower spec as ``labqfl run`` over nodes does, load the operator's credentials, open the session to the
    server node, then (the server reached) make the run folder and train; the summary, written as the run
    folder's ``metrics.json`` with ``labqfl train``'s plots."""
    import dataclasses

    from labqfl.app.training import TrainingSetup
    from labqfl.cli.train import plot_training
    from labqfl.errors import ConfigError, LabqflError
    from labqfl.nodes.fl import train_on_server
    from labqfl.nodes.runjob import flower_spec_for
    from labqfl.runs import RunRecord

    setup = TrainingSetup(settings)  # validates; opens no key store, loads no data
    names = settings.client_names
    spec = dataclasses.replace(flower_spec_for(setup, names, data_dir=str(mnist_dir or "")), keys=settings.keys)
    spec.secagg()  # a spec the ServerApp would refuse fails here, before the server is asked
    rec: list[Any] = []

    def opened() -> None:
        rec.append(RunRecord.create(f"node-train-{settings.task}", runs_dir=runs_dir))
        if not quiet:
            console.print(f"training {settings.task} over the server node {server_name} at {server}: "
                          f"{len(names)} SuperNodes ({', '.join(names)}), {settings.rounds} round(s), q={settings.q}, "
                          f"keys={settings.keys}", soft_wrap=True)

    try:
        res = train_on_server(server, certs, spec.to_config(), timeout_s=timeout_s, server_name=server_name,
                              on_session=opened)
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
#: (review s34 F8; the nodes do not report the key mode or mask settings they used)
NODE_RUN_TRUST = ("The key mode and the mask settings (graph, self-masks, DP) reach the nodes in the server node's "
                  "messages, not signed by this operator, and no node reports what it used; each SuperNode {}.")


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
