"""``labqfl train``: federated training through QKD-keyed (or CSPRNG) secure aggregation.

Tasks (QuNetQFL, arXiv 2501.12709): ``mnist-qnn`` (4-qubit HEA QNN, MNIST digit pair, 16
amplitudes), ``ntangled`` and ``magic`` (6-qubit HEA QNN on generated quantum data),
``mnist-lenet5`` (LeNet-5, 10 digits). Progress per round on stderr; a run folder with
``metrics.json`` and PNG plots; ``--json`` prints the metrics on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from labqfl.cli.common import (
    JSON_OPTION,
    console,
    emit,
    fail,
    given_on_command_line,
    handle_errors,
    print_path,
    progress_bar,
)

MNIST_DIR_OPTION = typer.Option(
    None, "--mnist-dir", file_okay=False, metavar="DIR",
    help="Folder with full MNIST (the four IDX files or mnist.npz); default: the embedded 5k subset.")
DATA_DIR_OPTION = typer.Option(
    None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False, metavar="DIR",
    help="Data folder holding keystore/NODE.sqlite for --keys qkd, as in every other command (default: "
         "the per-user data dir). It used to name the MNIST folder: a folder holding "
         "MNIST files and no keystore/ is still read as one, with a warning (use --mnist-dir).")
SELF_MASKS_OPTION = typer.Option(
    False, "--self-masks/--no-self-masks",
    help="Shamir-shared self-masks: a dropped client's late upload stays hidden (costs 2(q+1) key bits per parameter per pair more).")
ENGINE_OPTION = typer.Option(
    "local", "--engine", help="Federated-learning engine (not the error correction of run/distill's --engine): local "
    "(in-process) or flower (Flower simulation on Ray, one SuperNode per client).")
DP_CLIP_OPTION = typer.Option(
    None, "--dp-clip", help="L2-norm clip of each whole update for DP (default: the task's per-value --clip number "
                            "used as an L2 bound, much tighter; a warning says so).")
WAIT_FOR_KEY_OPTION = typer.Option(
    0.0, "--wait-for-key", "--wait-for-keys", min=0.0, metavar="SECONDS",
    help="Seconds a round may wait for QKD key that another process (labqfl distill, nodes) adds to the stores; "
         "0: the round fails at once with 'key starvation'. train acquires nothing itself, so this is a time, "
         "not labqfl run's --wait-for-key/--no-wait-for-key switch (run tops its stores up while it waits).")


def plot_training(rec: Any, summary: dict[str, Any], title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = list(range(0, len(summary["test_accuracy"]) + 1))
    acc = [summary["initial_test_accuracy"], *summary["test_accuracy"]]
    loss = [summary["initial_test_loss"], *summary["test_loss"]]
    out = []
    for name, ys, label in (("accuracy.png", [100 * a for a in acc], "test accuracy (%)"),
                            ("loss.png", loss, f"test loss ({summary['loss']})")):
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
        ax.plot(rounds, ys, marker="o", ms=3)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = rec.plot_path(name)
        fig.savefig(p)
        plt.close(fig)
        out.append(str(p))
    return out


def _holds_mnist(folder: Path) -> bool:
    """Whether ``folder`` has MNIST files the loader reads (``mnist.npz`` or a training-image IDX file)."""
    return any((folder / n).is_file() for n in ("mnist.npz", "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"))


def _resolve_dirs(mnist_dir: Path | None, data_dir: Path | None, keystore: Path | None,
                  keys: str) -> tuple[Path | None, Path | None]:
    """(MNIST folder, key-store data dir) from ``--mnist-dir``, ``--data-dir`` and the deprecated
    ``--keystore``. ``--data-dir`` is the key-store data dir, as in ``run``, ``distill`` and ``keys``;
    it used to be the MNIST folder, so an old command line keeps working, with a warning: ``--data-dir``
    beside ``--keystore``, or naming a folder that holds MNIST files and no ``keystore/``, without
    ``--mnist-dir``, is read as the MNIST folder — never one that holds ``keystore/`` (a key-store data dir:
    beside ``--keystore`` that is two key-store dirs, refused in one line, review s34 L19)."""
    if keystore is not None:
        console.print("warning: --keystore is deprecated; it is --data-dir now, as in every other command",
                      soft_wrap=True)
    if data_dir is not None and mnist_dir is None and not (data_dir / "keystore").is_dir() and (
            keystore is not None or _holds_mnist(data_dir)):
        console.print(f"warning: --data-dir {data_dir} read as the MNIST folder (its old meaning); use --mnist-dir "
                      "for MNIST; --data-dir is the key-store data dir now", soft_wrap=True)
        return data_dir, keystore
    if data_dir is not None and keystore is not None and data_dir != keystore:
        raise fail(f"--data-dir {data_dir} and --keystore {keystore} name two key-store data dirs; "
                   "give --data-dir only (--keystore is its deprecated name)")
    store = data_dir if data_dir is not None else keystore
    if store is not None and keys != "qkd":
        console.print(f"warning: --data-dir {store} is the key-store data dir, used with --keys qkd only; "
                      "full MNIST is --mnist-dir", soft_wrap=True)
    return mnist_dir, store


@handle_errors
def train(
    ctx: typer.Context,
    task: str = typer.Option("mnist-qnn", "--task", help="mnist-qnn | ntangled | magic | mnist-lenet5"),
    clients: int = typer.Option(4, "--clients", min=2, help="Number of clients C1..CN (at least 2: secure aggregation of one client "
                                 "would reveal its update)."),
    q: int = typer.Option(8, "--q", help="Bits per uploaded parameter and modulus 2^q (8, 16, 32)."),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Federated rounds."),
    keys: str = typer.Option("csprng", "--keys", help="Mask key source: qkd (node key stores) or csprng."),
    local_epochs: int | None = typer.Option(None, "--local-epochs", min=1, help="Local epochs per round (task default)."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (task default)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Local mini-batch size (task default)."),
    clip: float | None = typer.Option(None, "--clip", help="Clip updates to [-clip, clip] before quantising (task default)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data, splits, initial model, shuffling, rounding."),
    non_iid: bool = typer.Option(False, "--non-iid", help="Label-skewed client split (Dirichlet)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration for --non-iid."),
    graph: str = typer.Option("all", "--graph", help="Mask graph: all (every pair) or ring-k (k neighbours)."),
    k: int = typer.Option(0, "--k", help="Neighbours per client for --graph ring-k (even)."),
    mnist_dir: Path | None = MNIST_DIR_OPTION,
    digits: str = typer.Option("0,1", "--digits", help="Digit pair for mnist-qnn."),
    samples_per_client: int = typer.Option(30, "--samples-per-client", min=2, help="Generated states per client (ntangled, magic)."),
    test_size: int = typer.Option(400, "--test-size", min=2, help="Generated test states (ntangled, magic)."),
    data_dir: Path | None = DATA_DIR_OPTION,
    keystore: Path | None = typer.Option(None, "--keystore", metavar="DIR", help="Deprecated name of --data-dir."),
    wait_for_keys: float = WAIT_FOR_KEY_OPTION,
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch default)."),
    out: Path | None = typer.Option(None, "--out", help="Runs directory (default $LABQFL_RUNS_DIR or ./runs)."),
    self_masks: bool = SELF_MASKS_OPTION,
    threshold: int | None = typer.Option(
        None, "--threshold", min=1, help="Shamir threshold t for --self-masks (default: a majority of each client's holders)."),
    dp_epsilon: float | None = typer.Option(
        None, "--dp-epsilon", help="Distributed DP (discrete Gaussian): total ε over all rounds (off if not given)."),
    dp_delta: float = typer.Option(1e-5, "--dp-delta", help="DP δ for --dp-epsilon."),
    dp_honest: int = typer.Option(1, "--dp-honest", min=1,
                                  help="Honest clients H the DP guarantee assumes (server colludes with the other N−H)."),
    dp_clip: float | None = DP_CLIP_OPTION,
    engine: str = ENGINE_OPTION,
    noise: str | None = typer.Option(
        None, "--noise", help="QNN tasks: per-gate noise 'depolarizing=p,amplitude_damping=g,readout=r' (any subset; "
                              "density-matrix simulation, see labqfl.fl.models.noisy)."),
    shots: int | None = typer.Option(None, "--shots", min=1, help="QNN tasks: shots per expectation value (default: exact)."),
    shot_grad: str = typer.Option("parameter-shift", "--shot-grad",
                                  help="Gradients with --shots: parameter-shift (as on hardware) or straight-through."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a model federatedly with masked, quantised aggregation; write a run folder."""
    from labqfl.app.training import TrainingSettings, TrainingSetup
    from labqfl.runs import RunRecord

    # $LABQFL_DATA_DIR is the stores' default data dir, not a --data-dir to warn about or read as MNIST
    mnist_dir, keystore_dir = _resolve_dirs(mnist_dir, data_dir if given_on_command_line(ctx, "data_dir") else None,
                                            keystore, keys)
    if threads:
        import torch

        torch.set_num_threads(threads)
    settings = TrainingSettings(
        task=task, clients=clients, q=q, rounds=rounds, keys=keys, seed=seed, local_epochs=local_epochs, lr=lr,
        batch_size=batch_size, clip=clip, graph=graph, k=k, self_masks=self_masks, threshold=threshold,
        dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_honest=dp_honest, dp_clip=dp_clip, engine=engine, noise=noise,
        shots=shots, shot_grad=shot_grad, keystore_dir=keystore_dir, wait_for_keys=wait_for_keys, non_iid=non_iid,
        alpha=alpha, data_dir=mnist_dir, digits=digits, samples_per_client=samples_per_client, test_size=test_size)
    with TrainingSetup.prepare(settings) as setup:
        rec = RunRecord.create(f"train-{task}", runs_dir=out)
        try:
            with progress_bar(enabled=not as_json or console.is_terminal) as prog:
                bar = prog.add_task(f"{task}: {clients} clients, q={q}, keys={keys}", total=rounds)

                def on_round(m: Any) -> None:
                    prog.update(bar, advance=1, description=f"{task} round {m.round}: acc {100 * m.test_accuracy:.1f} %, "
                                                            f"loss {m.test_loss:.4f}")

                result = setup.run(progress=on_round)
            summary = setup.summary(result)
            summary["run_dir"] = str(rec.path)
            summary["plots"] = plot_training(rec, summary, f"{task}, N={clients}, q={q}, keys={summary['key_source']}")
            rec.write_metrics(summary)
        finally:
            rec.close()

    emit(summary, as_json, lambda con: render_training(con, summary))


def print_security(con: Any, statement: str | None, indent: str = "") -> None:
    """The masks' security statement of a training summary (``summary["security"]``, the same text as its
    --json and metrics.json; review s33 M3) on one line, as printed (no markup)."""
    con.print(f"{indent}security: {statement or 'not stated (an older run)'}", markup=False, soft_wrap=True)


def saving_text(saving: float) -> str:
    """The upload's change against float32 as printed: "−75 %" (smaller), "+33 %" (larger: DP pads to d'),
    "±0 %" (review s35 F5: a negative saving printed as "−-33 %")."""
    pct = round(100 * saving)
    return f"−{pct} %" if pct > 0 else f"+{-pct} %" if pct < 0 else "±0 %"


#: What a CSPRNG-mask run's bits are (review s36 F18: they were called "key bits" though no QKD key is used).
CSPRNG_NO_KEY = "CSPRNG masks, no QKD key used"


def _parts_text(summary: dict[str, Any]) -> str:
    """Where a pair's bits of a round go (review s36 F9: ``train`` spent 192 where ``run`` spent 448 for one task):
    " (masks 192 + refs tag key 256 …)" on the Flower engine with QKD keys, " (masks only: …)" else."""
    parts = summary.get("key_bits_per_pair_per_round_parts")
    if not parts:
        return ""
    if parts["refs_tag"]:
        return (f" ({parts['masks']:,} masks + {parts['refs_tag']:,} refs tag key, docs/secure_aggregation.md "
                "§9)")
    if summary["key_source"] != "qkd":
        return ""
    from labqfl.fl.flower.keys import REFS_TAG_BITS

    return (" (masks only: the local engine spends no refs tag key; over nodes, as labqfl run, each pair adds "
            f"{REFS_TAG_BITS} per round)")


def render_training(con: Any, summary: dict[str, Any]) -> None:
    from labqfl.report import data_text

    task, rounds, clients, q = summary["task"], summary["rounds_requested"], summary["clients"], summary["q"]
    data = data_text(summary)  # the task's data and test set, as report.html and labqfl run (review s39 user F5)
    con.print(f"[bold]{escape(task)}[/]{escape(f' ({data})') if data else ''}: final test accuracy {100 * summary['final_test_accuracy']:.2f} % "
              f"after {rounds} rounds ({clients} clients, q={q}, keys={summary['key_source']})", markup=True)
    qkd = summary["key_source"] == "qkd"
    bits = "key bits" if qkd else f"mask bits ({CSPRNG_NO_KEY})"  # review s36 F18: no QKD key is used then
    con.print(f"{bits} per pair per round {summary['key_bits_per_pair_per_round']:,}{_parts_text(summary)}; "
              f"total {summary['key_bits_total']:,}; upload {summary['upload_bits_per_client_per_round']:,} bits/client/round "
              f"(float32 {summary['baseline_upload_bits_per_client_per_round']:,}, "
              f"{saving_text(summary['communication_saving'])})")
    kc = summary["key_cost_per_round"]
    con.print(f"{'key' if qkd else 'mask bits'} per round {kc['key_bits_total']:,} bits ({kc['pairs']} pairs"
              + (f", self-mask share pads {kc['share_pad_key_bits']:,}" if summary["self_masks"]["enabled"] else "")
              + f"); the paper's all-pairs scheme: {kc['paper_all_pairs_key_bits']:,} bits "
              f"(×{kc['ratio_to_paper_all_pairs']:.2f})")
    if summary.get("privacy"):
        pv = summary["privacy"]
        con.print(f"privacy: ({pv['epsilon']:.3g}, {pv['delta']:.1g})-DP over {pv['rounds']} rounds, "
                  f"{pv['mechanism']}, holding with {pv['honest_clients_assumed']} honest client(s)")
    if summary["noise"] is not None:
        nz = summary["noise"]
        con.print(f"noise: depolarizing {nz['depolarizing']:g}, amplitude damping {nz['amplitude_damping']:g}, "
                  f"readout {nz['readout']:g}, shots {nz['shots'] or 'exact'}"
                  + (f" ({nz['shot_grad']}, {nz['shots_used']:,} shots used)" if nz["shots"] else ""))
    print_security(con, summary.get("security"))
    print_path(con, "run folder", summary["run_dir"])


def register(app: typer.Typer) -> None:
    app.command("train")(train)
