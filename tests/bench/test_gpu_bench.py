"""``labqfl bench gpu`` (issue 23 item 7): the measuring code runs on the CPU device here (same
code as on a GPU), agreement is checked, and a host without CUDA skips it in a full run and
refuses it by name with one clear line."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import labqfl.bench as bench_mod
from labqfl.bench import BenchEntry, BenchResult
from labqfl.bench.entries import gpu as gpu_entry
from labqfl.cli import app


def test_measure_on_the_cpu_device_agrees_with_the_cpu_kernels():
    d = gpu_entry.measure(torch.device("cpu"), quick=True)
    assert d["toeplitz"]["bit_identical"] is True
    assert d["toeplitz"]["mbit_s_device_end_to_end"] > 0 and d["toeplitz"]["mbit_s_cpu_1_thread"] > 0
    assert [r["qber"] for r in d["ldpc"]] == [0.06]
    assert all(r["same_as_cpu"] and r["backend"] == "torch" for r in d["ldpc"])
    assert all(r["max_grad_difference"] <= 1e-10 for r in d["qnn"])
    tables = gpu_entry._tables(d)
    assert [len(t["rows"]) for t in tables] == [1, 1, 2, 2]
    k = d["ldpc_kernels"]
    assert k["torch"]["same_as_cpu"] and "numba-cuda" not in k


def _fake_registry():
    def ok(quick: bool) -> BenchResult:
        return BenchResult(figure=2.0, unit="x/s", baseline="b", baseline_figure=1.0)

    return {"needs-gpu": BenchEntry("needs-gpu", "d", ok, "", lambda: "needs a CUDA device (none here)"),
            "plain": BenchEntry("plain", "d", ok, "")}


def test_a_benchmark_the_host_cannot_run_is_skipped_in_a_full_run_and_refused_by_name(monkeypatch):
    monkeypatch.setattr("labqfl.cli.bench.registry", _fake_registry)
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data["results"]) == ["plain"]
    assert data["skipped"] == {"needs-gpu": "needs a CUDA device (none here)"}
    r = runner.invoke(app, ["bench", "needs-gpu", "plain"])
    assert r.exit_code == 1
    assert "cannot run here: needs-gpu (needs a CUDA device (none here))" in r.stderr


def test_the_real_gpu_entry_is_refused_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU host too
    assert bench_mod.registry()["gpu"].unavailable() is not None
    r = CliRunner().invoke(app, ["bench", "gpu"])
    assert r.exit_code == 1 and "cannot run here: gpu (needs a CUDA device" in r.stderr
