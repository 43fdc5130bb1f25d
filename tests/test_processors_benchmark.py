"""Smoke run of benchmarks/processor_throughput.py on a session sample."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from advsyst.data import generate_sample

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "processor_throughput.py"


def test_benchmark_runs_and_reports_both_paths(tmp_path_factory, tmp_path):
    d = tmp_path_factory.getbasetemp() / "advsyst_samples"
    d.mkdir(exist_ok=True)
    sample = d / "ttbar_200_1_0.root"
    if not sample.exists():
        generate_sample("ttbar", 200, sample, seed=1, progress=False)
    spec = importlib.util.spec_from_file_location("_processor_throughput", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        out = tmp_path / "bench.json"
        assert mod.main(["--input", str(sample), "--repeat", "1", "--json", str(out)]) == 0
    finally:
        sys.modules.pop(spec.name, None)
    res = json.loads(out.read_text())
    assert res["jets"] > 0 and res["events"] == 200
    assert {"uproot read", "uproot + features", "coffea iterative", "coffea dask"} == set(
        res["timings"]
    )
    assert all(r["jets_per_s"] > 0 for r in res["timings"].values())
