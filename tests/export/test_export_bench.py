"""`spinefx bench` runs on a model folder and reports every variant it holds (not a speed test:
tests check correctness, never wall time)."""
from __future__ import annotations

from spinefx.export.bench import format_table, run_benchmark


def test_bench_times_every_variant_of_a_model_folder(exported):
    out, spec = exported
    result = run_benchmark(model_dir=out, batch_sizes=(1, 2), runs=2, gradcam=False, log=None)
    variants = {r["variant"] for r in result["rows"]}
    assert {"torch eager", "ORT fp32", "ORT fp32 prob-only"} <= variants
    assert {f"ORT {v}" for v in spec["files"]} <= variants
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["batch"] in (1, 2)
        if row["variant"] == "torch eager":
            assert row["relative_to_torch"] == 1.0
    table = format_table(result)
    assert "| ORT fp32 " in table and "model folder" in table


def test_runtime_process_profile_loads_no_torch():
    from spinefx.export.bench import format_runtime, runtime_profile

    profile = runtime_profile(size=256, n_slices=12)  # the bundled model, a fresh process
    assert profile["torch_loaded"] is False
    assert profile["peak_rss_mib"] > 0 and profile["process_wall_s"] >= profile["first_result_s"]
    assert "2 series x 12 slices, 256x256" in format_runtime(profile)
