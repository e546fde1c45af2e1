"""Federated training as one use case: ``labqfl train``, ``labqfl run``'s training phase and the
GUI's training all set up through :class:`TrainingSetup`.

The recipe (QuNetQFL, arXiv 2501.12709, with the self-masks and DP of issue 21): the task's
defaults for local training and update clip (:data:`labqfl.fl.tasks.TASK_DEFAULTS`); the
secure-aggregation config (:class:`labqfl.fl.secure.SecAggConfig`: q, stochastic rounding, the
mask graph, Shamir self-masks and threshold, the distributed-DP plan of :func:`labqfl.fl.dp.plan_dp`);
the bit budget (q bits hold N clipped values); the key source (the node key stores, or a
CSPRNG) with a pre-flight check that every mask-graph pair holds the key all rounds need; the
run (in process, or on Flower); the key cost, provenance and security statement of the summary;
and closing the key stores, always.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.errors import ConfigError, KeyStarvationError, SecureAggregationError
from labqfl.log import get_logger

log = get_logger(__name__)

#: statement added to a run's security line when self-masks are on; the share transport is only as secret as the
#: pair keys its pads come from (the statement before it says what those rest on; review s33 L2)
SELF_MASK_SECURITY = ("; self-masks: Shamir sharing over GF(p) (fewer shares than the threshold reveal nothing), "
                      "shares carried under pads of the pair keys (as secret as those keys, stated above), "
                      "self-mask words from the OS CSPRNG (as strong as the OS generator)")


def parse_digits(text: str) -> tuple[int, int]:
    """``"a,b"`` → (a, b): two different digits 0–9 (the MNIST pair of ``mnist-qnn``)."""
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--digits must be two digits like '0,1', got {text!r}") from None
    if not (0 <= a <= 9 and 0 <= b <= 9 and a != b):
        raise ConfigError(f"--digits must be two different digits 0-9, got {text!r}")
    return a, b


@dataclass(frozen=True)
class TrainingSettings:
    """One federated training job (the options of ``labqfl train``; ``None``: the task's default).

    ``names``: the clients (default C1..C``clients``); ``keys``: ``"qkd"`` (node key stores under
    ``keystore_dir``, default the data dir) or ``"csprng"``; ``wait_for_keys`` [s]: how long a
    round may wait for key (0: fail at once); ``preflight``: refuse before training unless every
    pair holds the key of all ``rounds`` (only when not waiting); ``samples_per_client`` /
    ``test_size``: generated quantum datasets (``None``: :func:`~labqfl.fl.datasets.tasks.load_task`'s
    default).
    """

    task: str = "mnist-qnn"
    clients: int = 4
    names: tuple[str, ...] | None = None
    q: int = 8
    rounds: int = 10
    keys: str = "csprng"
    seed: int = 0
    local_epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    clip: float | None = None
    graph: str = "all"
    k: int = 0
    self_masks: bool = False
    threshold: int | None = None
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_honest: int = 1
    dp_clip: float | None = None
    engine: str = "local"
    noise: str | None = None
    shots: int | None = None
    shot_grad: str = "parameter-shift"
    keystore_dir: Path | None = None
    wait_for_keys: float = 0.0
    preflight: bool = True
    non_iid: bool = False
    alpha: float = 0.5
    data_dir: Path | str | None = None
    digits: str = "0,1"
    samples_per_client: int | None = None
    test_size: int | None = None

    @property
    def client_names(self) -> list[str]:
        return list(self.names) if self.names is not None else [f"C{i + 1}" for i in range(self.clients)]

    def validate(self) -> None:
        from labqfl.fl.datasets.tasks import TASKS
        from labqfl.fl.quantize import q_problem

        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task!r} unknown; expected one of {', '.join(TASKS)}")
        if self.keys not in ("qkd", "csprng"):
            raise ConfigError(f"--keys {self.keys!r} unknown; expected qkd or csprng")
        if self.engine not in ("local", "flower"):
            raise ConfigError(f"--engine {self.engine!r} unknown; expected local or flower")
        if len(self.client_names) < 2:
            raise ConfigError("--clients must be ≥ 2: secure aggregation of one client would reveal its update")
        self._check_scale()
        if self.rounds < 1:
            raise ConfigError(f"rounds must be ≥ 1, got {self.rounds}")
        if (problem := q_problem(self.q)) is not None:
            raise ConfigError(f"--q {problem}")
        for option, value in (("--lr", self.lr), ("--clip", self.clip), ("--alpha", self.alpha)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{option} must be a positive finite number, got {value}")
        if self.threshold is not None and not self.self_masks:
            raise ConfigError(f"--threshold {self.threshold} needs --self-masks")
        if self.dp_epsilon is None and (self.dp_clip is not None or self.dp_honest != 1):
            raise ConfigError("--dp-clip/--dp-honest need --dp-epsilon")


    def _check_scale(self) -> None:
        """Refuse client counts and mask graphs this process cannot hold, before anything is built
        (on the 2-core development VM, one round of ntangled with q = 32: 4 000 clients on ``all``,
        8·10^6 pairs, 62 s and 2.2 GB; 20 000 on ``ring-4``, 51 s and 2.0 GB; 100 000 on ``all``
        never finished)."""
        from labqfl.fl.masks import mask_pair_count, parse_graph

        n = len(self.client_names)
        if n > MAX_TRAIN_CLIENTS:
            raise ConfigError(f"--clients {n}: at most {MAX_TRAIN_CLIENTS} clients train in one process")
        try:
            pairs = mask_pair_count(n, self.graph, self.k)
            kind, _ = parse_graph(self.graph, self.k)
        except ValueError as exc:
            raise ConfigError(f"--graph/--k: {exc}") from None
        if pairs > MAX_MASK_PAIRS:
            hint = " (use --graph ring-k --k K: N·K/2 pairs)" if kind == "all" else ""
            raise ConfigError(f"--clients {n} with --graph {self.graph} makes {pairs:,} mask pairs per round; at most "
                              f"{MAX_MASK_PAIRS:,} fit one process{hint}")


#: largest federation ``labqfl train`` runs in one process (see ``TrainingSettings._check_scale``)
MAX_TRAIN_CLIENTS = 20_000
#: most mask-graph pairs per round (each holds its key words and the accounting of its key)
MAX_MASK_PAIRS = 10_000_000


class TrainingSetup:
    """Everything a federated run needs, built from :class:`TrainingSettings` by one recipe.

    Construction validates the settings and builds the local-training config, the model (wrapped
    in its noise model with ``noise``/``shots``), the secure-aggregation config with its DP plan
    and checks the bit budget. :meth:`open_keys` opens the key source (with the pre-flight check),
    :meth:`load_data` the task data, :meth:`run` trains; :meth:`close` (or ``with``) closes the
    key stores. :meth:`prepare` does all but :meth:`run` at once.
    """

    def __init__(self, settings: TrainingSettings) -> None:
        from labqfl.fl import recipe
        from labqfl.fl.tasks import make_model

        settings.validate()
        s = self.settings = settings
        self.names = s.client_names
        # the recipe the Flower spec's node processes rebuild too (labqfl.fl.recipe)
        self.local = recipe.local_config(s.task, epochs=s.local_epochs, lr=s.lr, batch_size=s.batch_size)
        self.secagg = recipe.secagg_config(q=s.q, clip=recipe.update_clip(s.task, s.clip), graph=s.graph, k=s.k,
                                           self_masks=s.self_masks, threshold=s.threshold, n_clients=len(self.names))
        self.model = make_model(s.task)
        self.noise_model: Any = None
        if s.noise is not None or s.shots is not None:
            self._add_noise()
        self.dp_plan: Any = None
        if s.dp_epsilon is not None:
            self._add_dp()
        #: words per upload (DP pads the flattened update to d')
        self.n_words = self.dp_plan.d_pad if self.dp_plan is not None else self.model.n_params
        self.share_threshold: int | None = None
        if s.self_masks:
            try:
                self.share_threshold = self.secagg.share_threshold(self.names)
            except SecureAggregationError as exc:
                raise ConfigError(f"--threshold: {exc}") from None
        self.key_source: Any = None
        self.data: Any = None
        #: the quantisation plan of the loaded data (:meth:`SecAggConfig.quantization`; None with DP)
        self.quantization: dict[str, Any] | None = None

    @classmethod
    def prepare(cls, settings: TrainingSettings) -> TrainingSetup:
        """Build, open the key source (pre-flight check included) and load the data."""
        setup = cls(settings)
        try:
            setup.open_keys()
            setup.load_data()
        except BaseException:
            setup.close()
            raise
        return setup

    # -- the parts ---------------------------------------------------------------------------------
    def _add_noise(self) -> None:
        from labqfl.fl.models.noisy import NoiseModel, noisy_qnn

        s = self.settings
        if s.engine != "local":
            raise ConfigError("--noise/--shots run on --engine local only")
        try:
            self.noise_model = NoiseModel.parse(s.noise, shots=s.shots, shot_grad=s.shot_grad)
            self.model = noisy_qnn(self.model, self.noise_model, s.seed)
        except ValueError as exc:
            raise ConfigError(f"--noise/--shots/--shot-grad: {exc}") from None

    def _add_dp(self) -> None:
        from labqfl.fl.recipe import dp_plan

        s = self.settings
        assert s.dp_epsilon is not None
        self.dp_plan = dp_plan(epsilon=s.dp_epsilon, delta=s.dp_delta, honest=s.dp_honest,
                               l2_clip=s.dp_clip if s.dp_clip is not None else self.secagg.clip,
                               n_params=self.model.n_params, n_clients=len(self.names), q=s.q, rounds=s.rounds,
                               what="--dp-*")
        self.secagg = dataclasses.replace(self.secagg, dp=self.dp_plan)
        if s.dp_clip is None:
            log.warning("%s.", self.dp_clip_caveat())

    def dp_clip_caveat(self) -> str | None:
        """What the DP L2 clip is when ``--dp-clip`` was not given (``None`` when it was, or without DP): the
        task's per-value ``--clip`` number reused as a bound on the whole update's L2 norm (review s35 F7).

        The default is kept (every entry point, ``labqfl train``, ``labqfl node train`` and a Flower spec,
        builds the same plan from it) and said, at planning and in the summary's ``privacy.l2_clip_source``.
        A warning when every client is clipped in a round would itself publish a statistic of the clients'
        private data outside the accountant (review s35 F2), so none is given."""
        s = self.settings
        if self.dp_plan is None or s.dp_clip is not None:
            return None
        n = self.model.n_params
        return (f"--dp-clip not given: each update's L2 norm is clipped to {self.dp_plan.l2_clip:g}, the task's "
                f"per-value --clip reused as an L2 bound over all {n:,} parameters (the per-value clip without DP "
                f"allows an L2 norm up to {self.dp_plan.l2_clip * math.sqrt(n):.3g}), so a DP and a no-DP run clip "
                f"differently; give --dp-clip near the update norms you expect")

    @property
    def keystore_dir(self) -> Path:
        from labqfl.keystore import default_data_dir

        return Path(self.settings.keystore_dir) if self.settings.keystore_dir is not None else default_data_dir()

    @property
    def key_bits_per_pair_per_round(self) -> int:
        """Key bits each mask-graph pair spends per round: the mask (and self-mask share pads), plus on the
        Flower engine with ``qkd`` keys the master's refs tag key
        (:data:`~labqfl.fl.flower.keys.REFS_TAG_BITS`, docs/secure_aggregation.md §9)."""
        from labqfl.planning import key_bits_per_pair_per_round

        s = self.settings
        return key_bits_per_pair_per_round(self.secagg, self.n_words, s.engine == "flower" and s.keys == "qkd")

    def open_keys(self) -> Any:
        """The key source: the node key stores (``qkd``; every client needs its store, and with
        ``preflight`` every pair the key of all rounds) or a CSPRNG."""
        from labqfl.fl.keysource import make_key_source

        s = self.settings
        if s.keys != "qkd":
            self.key_source = make_key_source("csprng")
            return self.key_source
        from labqfl.keystore import list_node_stores

        kdir = self.keystore_dir
        missing = [n for n in self.names if n not in set(list_node_stores(kdir))]
        if missing:
            raise ConfigError(f"--keys qkd: no key store for node(s) {missing} under {kdir / 'keystore'}; "
                              "distil keys first (labqfl distill) or use --keys csprng")
        self.key_source = make_key_source("qkd", keystore_dir=kdir, nodes=self.names,
                                          starvation="wait" if s.wait_for_keys > 0 else "fail",
                                          wait_timeout_s=s.wait_for_keys)
        if s.preflight and s.wait_for_keys == 0:
            self.check_keys(s.rounds)
        return self.key_source

    def key_shortfall(self, rounds: int) -> dict[str, tuple[int, int]]:
        """The mask-graph pairs whose stores (both ends) hold less than ``rounds`` rounds of mask key:
        pair → (bits available, bits needed), in the graph's order; empty when every pair has enough.
        Needs the ``qkd`` key source open (:meth:`open_keys`)."""
        need = self.key_bits_per_pair_per_round * rounds
        return {p: (a, need) for p in self.secagg.pairs(self.names)
                if (a := int(self.key_source.available_bits(p))) < need}

    def rounds_of_key(self, at_most: int) -> int:
        """How many rounds of mask key (at most ``at_most``) every mask-graph pair's stores hold: the
        fewest whole rounds over the pairs. Needs the ``qkd`` key source open (:meth:`open_keys`)."""
        per_round = self.key_bits_per_pair_per_round
        have = [int(self.key_source.available_bits(p)) // per_round for p in self.secagg.pairs(self.names)]
        return max(0, min([at_most, *have]))

    def check_keys(self, rounds: int) -> None:
        """Raise :class:`KeyStarvationError` naming the pair whose stores hold the fewest rounds of mask
        key, if it is fewer than ``rounds`` (and how many it does hold: the rounds a run can have)."""
        per_pair = self.key_bits_per_pair_per_round
        need = per_pair * rounds
        short = sorted(((p, a) for p, (a, _) in self.key_shortfall(rounds).items()), key=lambda x: x[1])
        if short:
            p, avail = short[0]  # the limiting pair (review s32: the first short pair's count still failed)
            mask = int(self.secagg.key_bits_per_pair(self.n_words))
            words = f"{mask // self.n_words}·{self.n_words} words"
            what = f"{words} + {per_pair - mask} bits of refs tag key" if per_pair > mask else words
            raise KeyStarvationError(
                f"--keys qkd: pair {p} holds {avail} key bits but {rounds} rounds need {need} "
                f"({per_pair} per round = {what}) — enough for {avail // per_pair} round(s)"
                + (f"; {len(short) - 1} more pair(s) short" if len(short) > 1 else "")
                + ". Distil more key, use fewer rounds, a sparse --graph ring-k, or --keys csprng",
                pair=p, needed_bits=need, available_bits=avail)

    def load_data(self) -> Any:
        """The task's client datasets and test set (:func:`labqfl.fl.datasets.tasks.load_task`)."""
        from labqfl.fl.datasets.splits import TooFewExamplesError
        from labqfl.fl.datasets.tasks import load_task

        s = self.settings
        kw: dict[str, Any] = {k: v for k, v in (("samples_per_client", s.samples_per_client),
                                                 ("test_size", s.test_size)) if v is not None}
        try:
            data = load_task(s.task, len(self.names), s.seed, non_iid=s.non_iid, alpha=s.alpha,
                             data_dir=s.data_dir, digits=parse_digits(s.digits), **kw)
        except TooFewExamplesError as exc:
            raise ConfigError(f"--clients {len(self.names)}: {exc}") from None
        # the i-th client (loop order) trains the i-th partition under its station name, as over nodes
        # (FlowerSpec.client_names): the masks are keyed on these names, so every update must carry one
        parts = list(data.clients.values())
        self.data = dataclasses.replace(data, clients=dict(zip(self.names, parts, strict=True)))
        self._plan_quantization()
        return self.data

    def _plan_quantization(self) -> None:
        """Each client's quantisation levels from its sample count (:meth:`SecAggConfig.quantization`, in the
        summary as ``quantization``); warn, before any round, about clients that get none (review s35 F4)."""
        weights = {c: float(len(y)) for c, (_, y) in self.data.clients.items()}
        self.quantization = self.secagg.quantization(weights)
        if (problem := self.secagg.zero_levels_problem(self.quantization)) is not None:
            log.warning("%s.", problem)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, *, progress: Any = None, **kw: Any) -> Any:
        """Train (:func:`labqfl.fl.training.run_federated`, or Flower with ``engine="flower"``);
        ``kw`` goes to ``run_federated`` (``secure_round_fn``, ``init_params``, ``start_round``,
        ``on_round_end``). Returns the :class:`~labqfl.fl.training.FederatedResult`."""
        s = self.settings
        if self.key_source is None:
            self.open_keys()
        if self.data is None:
            self.load_data()
        if s.engine == "flower":
            from labqfl.fl.flower.engine import run_federated_flower

            return run_federated_flower(
                self.model, self.data, rounds=s.rounds, local=self.local, secagg=self.secagg, keys=s.keys,
                seed=s.seed, progress=progress, keystore_dir=self.keystore_dir if s.keys == "qkd" else None,
                wait_for_keys=s.wait_for_keys,
                data_options={"non_iid": s.non_iid, "alpha": s.alpha, "data_dir": s.data_dir, "digits": s.digits,
                              "samples_per_client": s.samples_per_client if s.samples_per_client is not None else 100,
                              "test_size": s.test_size if s.test_size is not None else 400})
        from labqfl.fl.training import run_federated

        return run_federated(self.model, self.data, rounds=s.rounds, local=self.local, secagg=self.secagg,
                             key_source=self.key_source, seed=s.seed, progress=progress, **kw)

    def key_cost_per_round(self) -> dict[str, Any]:
        """Key bits per round (:func:`labqfl.fl.selfmask.key_cost`) next to the paper's all-pairs scheme."""
        from labqfl.fl.selfmask import key_cost

        n, q = len(self.names), self.settings.q
        n_pairs = len(self.secagg.pairs(self.names))
        cost = key_cost(n, n_pairs, self.n_words, q, self_masks=self.settings.self_masks)
        cost["paper_all_pairs_key_bits"] = n * (n - 1) // 2 * q * self.model.n_params
        return {**cost, "pairs": n_pairs, "all_pairs": n * (n - 1) // 2,
                "ratio_to_paper_all_pairs": cost["key_bits_total"] / cost["paper_all_pairs_key_bits"]}

    def summary(self, result: Any) -> dict[str, Any]:
        """``result.summary()`` with what the setup knows: key cost, self-masks, local and secagg
        settings, data, noise, and the provenance and security of the keys the masks consumed; the
        security line ends with what the engine leaves the masks (:func:`~labqfl.provenance.engine_trust`)."""
        from labqfl.fl.selfmask import SELF_MASK_RANDOMNESS, share_prime
        from labqfl.provenance import mask_key_provenance

        s = self.settings
        out: dict[str, Any] = result.summary()
        masks = int(self.secagg.key_bits_per_pair(self.n_words))
        out.update(
            key_cost_per_round=self.key_cost_per_round(),
            # where a pair's bits of a round go (review s36 F9): the masks, and the refs tag key on the Flower engine
            key_bits_per_pair_per_round_parts={"masks": masks, "refs_tag": self.key_bits_per_pair_per_round - masks},
            self_masks=({"enabled": True, "threshold": self.share_threshold, "share_field_prime": share_prime(s.q),
                         "randomness": SELF_MASK_RANDOMNESS} if s.self_masks else {"enabled": False}),
            clients=len(self.names), q=s.q, rounds_requested=s.rounds, seed=s.seed, loss=self.model.loss_name,
            local={"epochs": self.local.epochs, "lr": self.local.lr, "batch_size": self.local.batch_size,
                   "optimizer": "adam"},
            secagg=self.secagg.as_dict(), data=self.data.meta, client_sizes=self.data.sizes(),
            noise=({**self.noise_model.as_dict(), "shots_used": getattr(self.model, "shots_used", 0)}
                   if self.noise_model is not None else None),
            key_provenance=mask_key_provenance(self.key_source),
            security=self.security(),
            quantization=self.quantization,
        )
        if out.get("privacy") is not None:
            out["privacy"] = {**out["privacy"], "l2_clip_source": (
                "--dp-clip" if s.dp_clip is not None else "default: the task's per-value --clip, as an L2 bound")}
        return out

    def security(self) -> str:
        """What this run's masks rest on and who holds every update and pad on its engine: the security line
        of ``labqfl train`` and of the GUI's Training tab (at a run's start, its end, or when stopped)."""
        from labqfl.provenance import engine_trust, mask_key_security

        s = self.settings
        return (mask_key_security(self.key_source) + (SELF_MASK_SECURITY if s.self_masks else "") + ". "
                + engine_trust(s.engine, s.keys))

    def close(self) -> None:
        """Close the key stores the key source opened (idempotent)."""
        for store in getattr(self.key_source, "stores", {}).values():
            store.close()

    def __enter__(self) -> TrainingSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SELF_MASK_SECURITY", "TrainingSettings", "TrainingSetup", "parse_digits"]
