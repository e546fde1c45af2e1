"""The training task of the GUI core: federated training on its own thread through the
application layer's :class:`~labqfl.app.training.TrainingSetup` (the recipe ``labqfl train`` uses),
posting each round's metrics and the key left per pair."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from labqfl.gui.workers.common import Cancelled, log, one_line

from labqfl.errors import ConfigError

if TYPE_CHECKING:
    from labqfl.gui.core import TestbedCore


@dataclass
class TrainingOptions:
    """Federated-training job (same meaning as the options of ``labqfl train``)."""

    task: str = "mnist-qnn"
    clients: int = 4
    rounds: int = 10
    q: int = 8
    keys: str = "csprng"
    seed: int = 0
    graph: str = "all"
    k: int = 0
    samples_per_client: int = 100
    test_size: int = 400

    def settings(self, keystore_dir: Path | None = None) -> Any:
        """The application layer's :class:`~labqfl.app.training.TrainingSettings` for these options
        (task defaults for local training and clip; keys from the stores under ``keystore_dir``)."""
        from labqfl.app.training import TrainingSettings

        return TrainingSettings(task=self.task, clients=self.clients, rounds=self.rounds, q=self.q, keys=self.keys,
                                seed=self.seed, graph=self.graph, k=self.k, samples_per_client=self.samples_per_client,
                                test_size=self.test_size, keystore_dir=keystore_dir, preflight=False)


class TrainingTask:
    """One training run at a time; :meth:`stop_training` stops it after the current round."""

    def __init__(self, core: TestbedCore) -> None:
        self.core = core
        self._train_thread: threading.Thread | None = None
        self._train_stop = threading.Event()

    def start_training(self, options: TrainingOptions | None = None) -> None:
        """Run federated training (:func:`labqfl.fl.training.run_federated`) on its own thread."""
        opts = options or TrainingOptions()
        with self.core._lock:
            if self._train_thread is not None and self._train_thread.is_alive():
                self.core._error("Cannot start training", "training is already running")
                return
            self._train_stop.clear()
            self.core._set_busy("training", True)
            self._train_thread = self.core._thread(self._train, (opts,), "labqfl-training")
            self._train_thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        """The training thread (None if none was started)."""
        return self._train_thread

    def stop_training(self) -> None:
        """Stop training after the current round."""
        self._train_stop.set()

    def _post_pools(self) -> None:
        """The Live tab's key pools after key use (training takes mask key from the stores)."""
        self.core._acquisition_task.post_pools()

    def _train(self, opts: TrainingOptions) -> None:
        try:
            settings = opts.settings(self.core.data_dir)
            if opts.keys == "qkd":  # before the model and data load (≈ 15 s): say at once what is missing
                missing = missing_key_stores(settings.client_names, self.core.data_dir)
                if missing:
                    raise ConfigError(no_key_stores_text(missing, self.core.data_dir))
            self.core.post("progress", ("training", None, "loading model and data…"))
            from labqfl.app.training import TrainingSetup
            from labqfl.fl.secure import secure_round

            # the shared recipe; no pre-flight key check: keys may still be arriving from a running distillation
            setup = TrainingSetup.prepare(settings)
            model, data, secagg, names = setup.model, setup.data, setup.secagg, setup.names
            key_source = setup.key_source
            sizes = data.sizes()
            pairs = [p if isinstance(p, str) else "-".join(p) for p in secagg.pairs(names)]
            # before any key is used: what the masks will rest on (QKD keys: every block the stores hold), and
            # who holds every update and pad on this engine (review s34 F8)
            self.core.post("train_started", {"task": opts.task, "model": model.name, "n_params": model.n_params,
                                        "clients": {c: {"samples": int(n)} for c, n in sizes.items()},
                                        "keys": opts.keys, "rounds": opts.rounds, "q": opts.q, "pairs": pairs,
                                        "security": setup.security()})
            per_client: dict[str, dict[str, Any]] = {}

            def observed_round(updates: Any, weights: Any, cfg: Any, ks: Any, **kw: Any) -> Any:
                if self._train_stop.is_set():
                    raise Cancelled("training stopped by the user")
                res = secure_round(updates, weights, cfg, ks, **kw)
                for c, u in updates.items():
                    per_client[c] = {
                        "samples": int(sizes.get(c, 0)),
                        "status": "dropped" if c in res.dropped else "aggregated",
                        "update_norm": float(np.linalg.norm(np.asarray(u, dtype=np.float64))),
                        "weight": float(res.effective_weights.get(c, 0.0)),
                    }
                return res

            cum = {"key_bits": 0}

            def progress(m: Any) -> None:
                cum["key_bits"] += int(m.key_bits_total)
                row = asdict(m)
                row["key_bits_cumulative"] = cum["key_bits"]
                avail = {}
                if opts.keys == "qkd" and hasattr(key_source, "available_bits"):
                    for p in pairs:
                        try:
                            avail[p] = int(key_source.available_bits(p))
                        except Exception:
                            pass
                # the progress line first: the round's own line (with the key left) is the last word
                self.core.post("progress", ("training", m.round / opts.rounds,
                                       f"round {m.round}/{opts.rounds}: accuracy {100 * m.test_accuracy:.1f} %"))
                self.core.post("train_round", {"metrics": row, "clients": {c: dict(v, round=m.round) for c, v in per_client.items()},
                                          "available_bits": avail})
                if opts.keys == "qkd":
                    self._post_pools()
                if self._train_stop.is_set():
                    raise Cancelled("training stopped by the user")

            self.core.post("progress", ("training", 0.0, f"{opts.task}: {opts.clients} clients, keys={opts.keys}"))
            summary = run_to_summary(setup, progress, observed_round)
            # the progress event first: the summary that train_finished shows must stay the last word
            self.core.post("progress", ("training", 1.0, "training stopped" if summary.get("stopped") else "training finished"))
            self.core.post("train_finished", summary)
        except Exception as exc:
            msg = gui_wording(one_line(exc))
            log.debug("training failed", exc_info=exc)
            self.core.post("progress", ("training", 0.0, f"failed: {msg}"))
            self.core._error("Training failed", msg)
        finally:
            if opts.keys == "qkd":
                self._post_pools()
            self.core._set_busy("training", False)


def run_to_summary(setup: Any, progress: Any, observed_round: Any) -> dict[str, Any]:
    """Run ``setup`` (:class:`~labqfl.app.training.TrainingSetup`) and close it; the summary
    ``labqfl train --json`` prints (:meth:`~labqfl.app.training.TrainingSetup.summary`, with its
    ``security`` statement over the keys the masks consumed), or for a run stopped by the user
    ``{"stopped": True, "security": …}`` (its rounds used masks too)."""
    try:
        result = setup.run(progress=progress, secure_round_fn=observed_round)
        summary: dict[str, Any] = setup.summary(result)
        summary["stopped"] = False
    except Cancelled:
        summary = {"stopped": True, "security": setup.security()}
        log.info("training stopped by the user")
    finally:
        setup.close()
    return summary


def missing_key_stores(names: list[str], data_dir: Path | None) -> list[str]:
    """The clients among ``names`` without a key store under ``data_dir``."""
    from labqfl.keystore import list_node_stores

    have = set(list_node_stores(data_dir))
    return [n for n in names if n not in have]


def no_key_stores_text(missing: list[str], data_dir: Path | None) -> str:
    """Why ``qkd`` mask keys cannot be used, in the window's terms."""
    from labqfl.keystore import default_data_dir

    where = data_dir if data_dir is not None else default_data_dir()
    return (f"mask keys qkd: no key store for {', '.join(missing)} under {where}; distil keys first "
            "(Live tab ▸ Distillation ▸ Start) or choose mask keys csprng")


#: Command-line wording in the application layer's messages → the Training tab's (first match wins).
_GUI_WORDS = (
    ("use --keys csprng", "choose mask keys csprng"),
    ("or --keys csprng", "or choose mask keys csprng"),
    ("--keys qkd", "mask keys qkd"),
    ("--keys csprng", "mask keys csprng"),
    ("(labqfl distill)", "(Live tab ▸ Distillation ▸ Start)"),
    ("a sparse --graph ring-k, ", ""),
    ("--clients", "Clients"),
    ("--rounds", "Rounds"),
    ("--task", "Task"),
    ("--q", "Bits per parameter q"),
)


def gui_wording(message: str) -> str:
    """``message`` with the CLI's option names replaced by the Training tab's fields."""
    for cli, gui in _GUI_WORDS:
        message = message.replace(cli, gui)
    return message
