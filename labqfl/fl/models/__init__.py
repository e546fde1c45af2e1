"""Local models for federated learning: HEA QNNs (PennyLane circuit + torch fast path) and LeNet-5."""

from labqfl.fl.models.base import FLModel
from labqfl.fl.models.hea import HEASpec, hea_expval, hea_unitary, pennylane_qnode
from labqfl.fl.models.lenet import LeNet5, LeNetModel
from labqfl.fl.models.qnn import QNNModel, mnist_qnn, quantum_data_qnn

__all__ = ["FLModel", "HEASpec", "LeNet5", "LeNetModel", "QNNModel", "hea_expval", "hea_unitary",
           "mnist_qnn", "pennylane_qnode", "quantum_data_qnn"]
