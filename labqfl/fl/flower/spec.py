"""The settings of one Flower run, carried in every message (flat scalars for a ConfigRecord).

Both the server and each client rebuild the model and the task data from these settings, so a
ClientApp needs nothing but its node name (``node_config["labqfl-client"]`` in a deployment,
``partition-id`` in a simulation) and, for ``qkd`` keys, its key-store folder.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from labqfl.errors import ConfigError
from labqfl.fl.tasks import make_model

_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,63}")
_JOB_RE = re.compile(r"[A-Za-z0-9_.:-]{0,80}")
#: fields left out of :meth:`FlowerSpec.derived_job_id` (they do not determine a client's local update)
JOB_ID_LEFT_OUT = frozenset({"job_id", "rounds", "first_round", "last_round", "keys", "graph", "k", "self_masks",
                             "threshold", "min_survivors", "colluders", "data_dir", "test_size", "keystore_dir",
                             "wait_for_keys_s", "stage_timeout_s", "straggler_timeout_s", "node_wait_s", "absent",
                             "missing_ok_after_s"})


#: why a straggler timeout needs self-masks (review s38 G2; docs/secure_aggregation.md §9): a client it cuts off
#: after masking may be alive, and its late upload would be exposed
STRAGGLER_NEEDS_SELF_MASKS = ("needs --self-masks: without them a live client cut off after masking has its pair "
                              "keys revealed by its partners, and its late upload, still sent, can then be read by "
                              "the server operator (docs/secure_aggregation.md §9)")


@dataclass(frozen=True)
class FlowerSpec:
    """One federated run on Flower. Same meaning as the ``labqfl train`` options.

    ``keystore_dir``: qkd key stores folder for *simulated* clients (a deployed node uses its own
    ``node_config["labqfl-keystore"]``). ``stage_timeout_s``: how long the server waits for the
    replies of one protocol stage; a client that has not answered by then is dropped.
    ``straggler_timeout_s``: once a stage has its first reply, a client that has not answered
    this many seconds after the latest reply is dropped (0: off, wait the whole stage timeout) —
    in a deployment a ClientApp that dies mid-round never answers, and this bounds the wait.
    ``wait_for_keys_s``: how long a master node waits for key bits (0: fail at once).
    ``dp_epsilon`` > 0 turns on distributed DP (:mod:`labqfl.fl.dp`, the distributed discrete
    Gaussian): total ε over all ``rounds`` at ``dp_delta``, ``dp_honest`` honest clients assumed,
    L2 clip ``dp_clip`` (0: ``clip``); the plan is :meth:`dp_plan`, the same function and
    arguments as ``labqfl train --dp-epsilon`` in process.
    """

    task: str = "mnist-qnn"
    clients: int = 4
    q: int = 8
    rounds: int = 1
    keys: str = "csprng"
    seed: int = 0
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 16
    clip: float = 1.0
    rounding: str = "stochastic"
    graph: str = "all"
    k: int = 0
    min_survivors: int = 2
    self_masks: bool = False
    threshold: int = 0  # Shamir threshold with self_masks; 0: the default (a majority of the holders)
    non_iid: bool = False
    alpha: float = 0.5
    data_dir: str = ""
    digits: str = "0,1"
    samples_per_client: int = 100
    test_size: int = 400
    keystore_dir: str = ""
    wait_for_keys_s: float = 0.0
    stage_timeout_s: float = 600.0
    straggler_timeout_s: float = 0.0
    node_wait_s: float = 300.0
    dp_epsilon: float = 0.0  # 0: no DP
    dp_delta: float = 1e-5
    dp_honest: int = 1
    dp_clip: float = 0.0  # 0: the update clip ``clip``
    #: the clients in loop order, comma-separated ("": C1..C``clients``); the i-th trains data
    #: partition i with shuffling seed index i, as client i of the in-process engine
    client_names: str = ""
    #: QNN hardware noise (:class:`~labqfl.fl.models.noisy.NoiseModel`): ``"depolarizing=p,..."``
    #: ("": none), shots per expectation (0: exact) and the shot gradient rule
    noise: str = ""
    shots: int = 0
    shot_grad: str = "parameter-shift"
    #: the rounds this Flower run trains: ``first_round``..``last_round`` (0: ``rounds``) of a run of
    #: ``rounds`` rounds (``labqfl run`` over nodes trains in segments between waits for key); rounds are
    #: seeded by their index, so segments train as one run would (the ServerApp's initial parameters:
    #: run config ``labqfl-init``)
    first_round: int = 1
    last_round: int = 0
    #: the training job this run belongs to ("": the signed spec's ID): one job across ``labqfl run``'s
    #: segments and resumes, each under its own signed spec. Signed; a deployed node signs one survivor set
    #: per (job, round) in the self-mask consistency stage (docs/secure_aggregation.md §9)
    job_id: str = ""
    #: self-masks in a deployment: how many clients colluding with the server the consistency stage
    #: tolerates (signed; -1: t − 1 with t the Shamir threshold over all ``clients``, the threshold's own
    #: assumption; 0 ... ``clients`` − 2 the operator's choice). It sets the signatures a node requires before
    #: it unmasks, :meth:`consistency_need` (docs/secure_aggregation.md §9)
    colluders: int = -1
    #: clients lost before this Flower run starts, comma-separated ("": none): ``labqfl run`` over nodes
    #: names here the clients whose SuperNode exited during an earlier segment of the job. The server does not
    #: wait for them at its start (``node_wait_s``) and counts them dropped before masking in every round, as
    #: it counts a client lost during a run (no message is sent to them). The server's logistics (unsigned,
    #: :data:`~labqfl.fl.flower.specsig.UNSIGNED_FIELDS`): leaving a client out before masking is what any
    #: server can do, and each round still needs its survivors (:meth:`consistency_need`)
    absent: str = ""
    #: > 0: once this many seconds of ``node_wait_s`` have passed, the server starts without the clients still
    #: missing (counted absent) if the rounds can complete without them, else stops with one line (0: wait the whole
    #: ``node_wait_s`` for every client). ``labqfl run`` over nodes sets it for a segment after the first, whose
    #: SuperNodes are up already: one still missing has died at the segment's start. The server's logistics (unsigned)
    missing_ok_after_s: float = 0.0

    def __post_init__(self) -> None:
        if self.keys not in ("qkd", "csprng"):
            raise ConfigError(f"keys {self.keys!r} unknown; expected qkd or csprng")
        if self.clients < 2:
            raise ConfigError("clients must be ≥ 2: secure aggregation of one client would reveal its update")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be ≥ 1, got {self.rounds}")
        if not 1 <= self.first_round <= (self.last_round or self.rounds) <= self.rounds:
            raise ConfigError(f"first_round {self.first_round} and last_round {self.last_round} must satisfy "
                              f"1 ≤ first_round ≤ last_round (0: rounds) ≤ rounds = {self.rounds}")
        if not self.missing_ok_after_s >= 0:  # NaN too
            raise ConfigError(f"missing_ok_after_s must be ≥ 0 (0: off), got {self.missing_ok_after_s}")
        if self.stage_timeout_s <= 0 or self.straggler_timeout_s < 0:
            raise ConfigError(f"stage_timeout_s must be > 0 and straggler_timeout_s ≥ 0, got "
                              f"{self.stage_timeout_s} and {self.straggler_timeout_s}")
        if self.straggler_timeout_s > 0 and not self.self_masks:  # review s38 G2
            raise ConfigError(f"straggler_timeout_s {self.straggler_timeout_s:g}: {STRAGGLER_NEEDS_SELF_MASKS}")
        if self.dp_epsilon < 0 or self.dp_clip < 0:
            raise ConfigError(f"dp_epsilon and dp_clip must be ≥ 0 (0: off / the update clip), got "
                              f"{self.dp_epsilon} and {self.dp_clip}")
        if self.client_names:
            names = self.client_names.split(",")
            bad = [n for n in names if not _NAME_RE.fullmatch(n)]
            if bad or len(set(names)) != len(names) or len(names) != self.clients:
                raise ConfigError(f"client_names {self.client_names!r}: expected {self.clients} distinct names of "
                                  f"letters, digits and '_' (no '-': it separates a pair's names), comma-separated")
        if not _JOB_RE.fullmatch(self.job_id):
            raise ConfigError(f"job_id {self.job_id!r}: expected at most 80 letters, digits and '_.:-'")
        if not -1 <= self.colluders <= self.clients - 2:
            raise ConfigError(f"colluders {self.colluders}: expected -1 (t − 1) or 0 ... {self.clients - 2} (clients − 2: "
                              "against more colluders no aggregate of the others' updates hides an honest client's)")
        if self.absent and (bad := [c for c in self.absent.split(",") if c not in self.names]):
            raise ConfigError(f"absent {self.absent!r}: {bad} not among the clients {self.names}; expected a "
                              "comma-separated list of the run's client names")
        if self.shots < 0:
            raise ConfigError(f"shots must be ≥ 0 (0: exact expectation values), got {self.shots}")
        self.noise_model()  # a bad noise text fails here, with the item named

    @classmethod
    def for_task(cls, task: str, **kw: Any) -> FlowerSpec:
        """Spec with the task's default local-training settings (overridden by ``kw``)."""
        from labqfl.fl.recipe import local_config, update_clip

        local = local_config(task)  # the task defaults, as labqfl.app.training.TrainingSetup's
        base: dict[str, Any] = {"local_epochs": local.epochs, "lr": local.lr, "batch_size": local.batch_size,
                                "clip": update_clip(task)}
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(task=task, **base)

    def to_config(self) -> dict[str, Any]:
        """Flat dict of scalars, keys prefixed ``spec.`` (fits a Flower ConfigRecord / run_config)."""
        return {f"spec.{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, cfg: Any) -> FlowerSpec:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f"spec.{f.name}"
            if key in cfg:
                v = cfg[key]
                kw[f.name] = type(getattr(cls, f.name))(v) if not isinstance(getattr(cls, f.name), bool) else bool(v)
        return cls(**kw)

    @property
    def names(self) -> list[str]:
        """The clients in loop order: ``client_names``, or C1..C``clients``."""
        if self.client_names:
            return self.client_names.split(",")
        return [f"C{i + 1}" for i in range(self.clients)]

    @property
    def absent_names(self) -> list[str]:
        """The clients of :attr:`absent`, in loop order."""
        lost = set(self.absent.split(",")) if self.absent else set()
        return [c for c in self.names if c in lost]

    def index_of(self, name: str) -> int:
        """0-based position of client ``name`` in :attr:`names` (its data partition and seed index)."""
        names = self.names
        if name not in names:
            raise ConfigError(f"client {name!r} is not one of this run's clients {names}")
        return names.index(name)

    def client_data(self, name: str) -> Any:
        """(x, y) of client ``name``: the task data's partition at its position in :attr:`names`."""
        return self.data().clients[f"C{self.index_of(name) + 1}"]

    def tolerated_colluders(self, t: int | None = None) -> int:
        """c, the clients colluding with the server the consistency stage tolerates: ``colluders``, or for -1
        t − 1 with ``t`` (default: the Shamir threshold over all ``clients``, :meth:`full_threshold`)."""
        if self.colluders >= 0:
            return self.colluders
        return max(0, (self.full_threshold() if t is None else int(t)) - 1)

    def full_threshold(self) -> int:
        """The self-mask threshold t of a round in which all ``clients`` take part (``threshold``, or
        :func:`~labqfl.fl.selfmask.default_threshold` over the mask graph of all clients)."""
        from labqfl.fl.masks import mask_graph
        from labqfl.fl.selfmask import default_threshold

        return self.threshold or default_threshold(self.names, mask_graph(self.names, self.graph, self.k))

    def consistency_need(self, t: int | None = None) -> int:
        """Signatures over one survivor set a deployed node requires before it unmasks (and the fewest
        survivors a deployed self-mask round may have) at round threshold ``t`` (default
        :meth:`full_threshold`): :func:`~labqfl.fl.selfmask.consistency_need` with c =
        :meth:`tolerated_colluders` (of the full threshold, whatever the round's t: a server that drops
        clients before masking lowers the round's t but not the c the operator's settings assume)."""
        from labqfl.fl.selfmask import consistency_need

        full = self.full_threshold()
        return consistency_need(self.clients, full if t is None else int(t), self.min_survivors,
                                self.tolerated_colluders(full))

    def derived_job_id(self) -> str:
        """The training job a spec with an empty ``job_id`` belongs to: ``job-`` and the first 16 hex digits
        of SHA-256 over the canonical JSON of the signed settings that determine a client's local update,
        without those at their default value (an upgrade that adds a field keeps the job).

        Why (review s36 F2): a node signs one survivor set per (job, round). Local training is a function of
        the parameters the server sends, the round and these settings (seeds ``[seed, r, i]``), so two jobs
        whose settings agree here give the same round-r update for the same parameters, and a server that
        unmasks round r of both over different survivor sets learns a client's update by differencing. Runs
        whose settings agree here must therefore be one job. Left out (:data:`JOB_ID_LEFT_OUT`): the job ID
        itself; ``rounds``, ``first_round``, ``last_round`` (segments and resumes of one job; with DP
        ``rounds`` changes σ, left out on the safe side); ``keys``, ``graph``, ``k``, ``self_masks``,
        ``threshold``, ``min_survivors``, ``colluders`` (how the updates are masked, not what they are);
        ``data_dir``, ``test_size`` and the server's logistics (:data:`~labqfl.fl.flower.specsig.UNSIGNED_FIELDS`:
        timeouts, key waits, a simulation's key-store folder). The rule errs one way only: a field left out
        that does change the updates only merges two jobs (liveness: their rounds share pins); a field hashed
        that does not change them would split one job in two and reopen the differencing."""
        import hashlib
        import json

        base = FlowerSpec()
        keep = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in JOB_ID_LEFT_OUT and getattr(self, f.name) != getattr(base, f.name)}
        body = json.dumps(keep, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return "job-" + hashlib.sha256(b"labqfl-fl-job/1\x00" + body.encode()).hexdigest()[:16]

    def job(self) -> str:
        """The training job: ``job_id``, else :meth:`derived_job_id`."""
        return self.job_id or self.derived_job_id()

    def secagg(self) -> Any:
        """The secure-aggregation config (:func:`labqfl.fl.recipe.secagg_config`, as in process)."""
        from labqfl.fl.recipe import secagg_config

        return secagg_config(q=self.q, clip=self.clip, rounding=self.rounding, graph=self.graph, k=self.k,
                             min_survivors=self.min_survivors, self_masks=self.self_masks,
                             threshold=self.threshold or None, dp=self.dp_plan())

    def dp_plan(self) -> Any:
        """The run's :class:`~labqfl.fl.dp.DPPlan` (``None`` without DP): :func:`~labqfl.fl.dp.plan_dp`
        for this model's parameter count, ``clients`` clients, ``q`` and ``rounds`` — what the
        in-process engine uses for the same settings. Cached per process."""
        if self.dp_epsilon <= 0:
            return None
        return _dp_plan(self.dp_epsilon, self.dp_delta, self.dp_honest, self.dp_clip or self.clip,
                        int(self.model().n_params), self.clients, self.q, self.rounds)

    def upload_words(self) -> int:
        """Words per masked upload: the DP plan's padded length d', or the model's parameter count
        (the node's own count from the task's model, cached per process)."""
        plan = self.dp_plan()
        return int(plan.d_pad) if plan is not None else int(_model(self.task).n_params)

    def local(self) -> Any:
        from labqfl.fl.recipe import local_config

        return local_config(self.task, epochs=self.local_epochs, lr=self.lr, batch_size=self.batch_size)

    def noise_model(self) -> Any:
        """The :class:`~labqfl.fl.models.noisy.NoiseModel` of ``noise``/``shots``/``shot_grad``, or
        ``None`` without them (what ``labqfl train --noise/--shots/--shot-grad`` builds)."""
        if not self.noise and not self.shots:
            return None
        from labqfl.fl.models.noisy import NoiseModel

        try:
            return NoiseModel.parse(self.noise or None, shots=self.shots or None, shot_grad=self.shot_grad)
        except ValueError as exc:
            raise ConfigError(f"noise/shots/shot_grad: {exc}") from None

    def model(self, stream: tuple[int, ...] = ()) -> Any:
        """The task's model; with a noise model, the QNN under that noise (``noisy_qnn``) whose shot
        generator is seeded by ``seed`` (the server's evaluation, as the in-process engine's model)
        or, for a ``stream`` (e.g. (round, client index): one ClientApp call), by
        ``SeedSequence([seed, *stream])``, so that every client and round draws its own shots."""
        base = _model(self.task)
        nm = self.noise_model()
        if nm is None:
            return base
        from labqfl.fl.models.noisy import noisy_qnn

        seed = int(np.random.SeedSequence([self.seed, *stream]).generate_state(1)[0]) if stream else self.seed
        try:
            return noisy_qnn(base, nm, seed)
        except ValueError as exc:
            raise ConfigError(f"noise/shots: {exc}") from None

    def data(self) -> Any:
        """The task data (all clients and the test set); cached per process."""
        return _data(self.task, self.clients, self.seed, self.non_iid, self.alpha, self.data_dir, self.digits,
                     self.samples_per_client, self.test_size)


@functools.lru_cache(maxsize=4)
def _model(task: str) -> Any:
    from labqfl.fl.recipe import task_defaults

    task_defaults(task)  # an unknown task: one ConfigError line
    return make_model(task)


@functools.lru_cache(maxsize=8)
def _dp_plan(epsilon: float, delta: float, honest: int, l2_clip: float, n_params: int, clients: int, q: int,
             rounds: int) -> Any:
    from labqfl.fl.recipe import dp_plan

    return dp_plan(epsilon=epsilon, delta=delta, honest=honest, l2_clip=l2_clip, n_params=n_params,
                   n_clients=clients, q=q, rounds=rounds, what="dp_*")


@functools.lru_cache(maxsize=2)
def _data(task: str, clients: int, seed: int, non_iid: bool, alpha: float, data_dir: str, digits: str,
          samples_per_client: int, test_size: int) -> Any:
    from labqfl.fl.datasets.tasks import load_task

    a, b = (int(x) for x in digits.split(","))
    return load_task(task, clients, seed, non_iid=non_iid, alpha=alpha, data_dir=data_dir or None,
                     digits=(a, b), samples_per_client=samples_per_client, test_size=test_size)


def client_index(name: str) -> int:
    """0-based index of client "Ci" (i − 1)."""
    if not (name.startswith("C") and name[1:].isdigit() and int(name[1:]) >= 1):
        raise ConfigError(f"client name {name!r} must be C1, C2, …")
    return int(name[1:]) - 1


def as_float64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1))
