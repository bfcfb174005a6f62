"""Adversarial models train, sample and export from train.run (tiny budgets)."""

import json

import pytest

import zoo
from conftest import run_module, saved_signatures



# cgan's and dcgan's steps, signatures and exports are covered in-process (test_contract.py,
# the mirrored check), by test_serving.py and test_ema.py (dcgan's train.run and export) and by
# test_multi_worker.py (dcgan's train.run across workers); their runs here are left out for
# CI's 15 minutes. saved_model_cli itself is run in test_cli.py.
# bigan's export is verified in a fresh process by test_ema.py's test_export_serves_the_average.
@pytest.mark.parametrize("model, strategy, export", [("gan", "mirrored", True), ("aae", "default", True),
                                                     ("bigan", "default", False)])
def test_train_run_trains_samples_and_exports(tmp_path, model, strategy, export):
    workdir, base = tmp_path / "w", tmp_path / "serving"
    proc = run_module("train.run", f"--model={model}", f"--strategy={strategy}", "--dataset=digits",
                      "--batch_size=32", "--steps_per_epoch=2", "--epochs=1", "--verbose=0",
                      f"--workdir={workdir}", *([f"--export_base={base}"] if export else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "samples" / "epoch_0001.png").exists() and (workdir / "model.keras").exists()
    if not export:
        return
    found = set(saved_signatures(base / model / "1")) - {"__saved_model_init_op"}
    assert found == {"serving_default", "serve", "sample", "sample_png", *zoo.get(model).signature_names}


FAKE_REFERENCE = """
import sys, time
steps = int(sys.argv[sys.argv.index("--steps") + 1])
end = time.process_time() + 0.05 * steps  # 0.05 CPU s per step of 16 images
while time.process_time() < end:
    pass
print("fake images_per_s=123.0")
"""


def test_benchmark_prints_its_figures(tmp_path):
    reference = tmp_path / "ref.py"
    reference.write_text(FAKE_REFERENCE)
    proc = run_module("train.benchmark", "--model=gan", "--batch_size=16", "--steps=4", "--vs_reference",
                      f"--reference={reference}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("train_images_per_s", "train_images_per_cpu_s", "serving_ms_batch_1", "serving_ms_batch_64",
                "peak_memory_mb"):
        assert result[key] > 0, key
    assert result["reference_images_per_s"] == 123.0
    assert result["ratio_vs_reference"] == pytest.approx(result["train_images_per_s"] / 123.0)
    # 4 more steps of 0.05 CPU s for 16 images each in the second run: 320 images per CPU second.
    assert result["reference_images_per_cpu_s"] == pytest.approx(320, rel=0.25)
    assert result["ratio_per_cpu_s"] == pytest.approx(result["train_images_per_cpu_s"] / result["reference_images_per_cpu_s"])
