"""Task registry shared by ``labqfl train``, ``labqfl run`` and the Flower engine: the model of
each task and its default local-training hyper-parameters."""

from __future__ import annotations

from typing import Any

#: Per-task defaults: (local epochs, learning rate, batch size, clip).
TASK_DEFAULTS: dict[str, tuple[int, float, int, float]] = {
    "mnist-qnn": (1, 0.05, 16, 1.0),
    "ntangled": (2, 0.05, 16, 1.0),
    "magic": (2, 0.05, 16, 1.0),
    "mnist-lenet5": (1, 0.002, 16, 0.1),
}


def make_model(task: str) -> Any:
    """The paper's model for ``task``: 4-qubit/3-layer HEA QNN with amplitude embedding (MNIST),
    6-qubit/4-layer HEA QNN (quantum data), or LeNet-5."""
    from labqfl.fl.models import LeNetModel, mnist_qnn, quantum_data_qnn

    if task == "mnist-qnn":
        return mnist_qnn()
    if task in ("ntangled", "magic"):
        return quantum_data_qnn()
    if task == "mnist-lenet5":
        return LeNetModel()
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_DEFAULTS)}")
