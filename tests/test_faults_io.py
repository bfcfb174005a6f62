"""Faults at the edges of a run: flags that cannot train, workdirs and export
bases that are files, read-only or full, broken or mixed-up workdirs, exports
of non-finite weights, concurrent exports and their leftovers."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import fork_server, run_module, without_xla
from test_faults import BASE, copy_of, history, last_line, trained  # noqa: F401  (trained: a fixture)


@pytest.mark.parametrize("flags, message", [
    ({"epochs": 0}, "--epochs=0 must be at least 1"),
    ({"epochs": -3}, "--epochs=-3 must be at least 1"),
    ({"learning_rate": 0.0}, r"--learning_rate=0.0 must be a finite number > 0"),
    ({"learning_rate": -0.001}, r"--learning_rate=-0.001 must be a finite number > 0"),
    ({"learning_rate": float("nan")}, r"--learning_rate=nan must be a finite number > 0"),
    ({"keep_checkpoints": 0}, "--keep_checkpoints=0 must be at least 1"),
    ({"steps_per_epoch": 0}, "--steps_per_epoch=0 must be at least 1"),
])
def test_flags_that_cannot_train_are_refused_before_anything_is_written(tmp_path, flags, message):
    from train import run

    config = {"model": "ae", "dataset": "digits", "image_size": None, "seed": 0, "model_options": {},
              "training": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-3, "lr_decay": "none"}}
    config["training"].update({k: v for k, v in flags.items() if k in config["training"]})
    others = {k: v for k, v in flags.items() if k not in config["training"]}
    workdir = tmp_path / "w"
    with pytest.raises(run.RunError, match=message):
        run.check_training(config["training"])
        run.train(str(workdir), config, **others)
    assert not workdir.exists()


def test_a_flag_that_cannot_train_is_one_line_from_the_command_line(train_run, tmp_path):
    workdir = tmp_path / "w"
    proc = train_run(*BASE, "--learning_rate=0", f"--workdir={workdir}")
    assert proc.returncode == 2 and "--learning_rate=0.0 must be a finite number > 0" in last_line(proc)
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_a_workdir_or_export_base_that_is_a_file_is_refused_before_training(train_run, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("")
    proc = train_run(*BASE, f"--workdir={a_file}")
    assert proc.returncode == 2 and f"--workdir={a_file} is a file" in last_line(proc)
    proc = train_run(*BASE, f"--workdir={tmp_path / 'w'}", f"--export_base={a_file}")
    assert proc.returncode == 2 and f"--export_base={a_file} is a file" in last_line(proc)
    assert not (tmp_path / "w").exists() and "Traceback" not in proc.stderr


def test_export_refuses_a_mixed_up_or_broken_workdir(trained, tmp_path):
    workdir, base = copy_of(trained, tmp_path), tmp_path / "b"
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, "model": "vae"}))
    proc = run_module("export.run", f"--workdir={workdir}", f"--export_base={base}", timeout=120)
    assert proc.returncode == 2 and "names model vae but" in last_line(proc) and "holds a AE" in last_line(proc)
    (workdir / "config.json").write_text("[]")
    proc = run_module("export.run", f"--workdir={workdir}", f"--export_base={base}", timeout=120)
    assert proc.returncode == 2 and "names no zoo model" in last_line(proc) and "Traceback" not in proc.stderr
    assert not base.exists() or not any(base.rglob("saved_model.pb"))


def test_export_refuses_non_finite_weights_for_that_reason(tmp_path):
    import numpy as np

    import zoo
    from export import saved_model

    model = zoo.build("ae", image_shape=(8, 8, 1), latent_dim=2, net="mlp")
    weight = model.decoder.weights[0]
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    with pytest.raises(saved_model.ExportError, match=r"weight \S+ holds NaN or inf"):
        saved_model.export(model, str(tmp_path), "ae")
    assert not (tmp_path / "ae").exists()


def test_concurrent_exports_get_distinct_versions_and_dead_exports_are_cleaned(trained, tmp_path):
    workdir, base = copy_of(trained, tmp_path), tmp_path / "b"
    (base / "ae" / ".tmp-7-99999").mkdir(parents=True)  # what a killed export left
    (base / "ae" / ".tmp-7-99999.io.npz").write_bytes(b"")
    cmd = ["export.run", f"--workdir={workdir}", f"--export_base={base}"]
    procs = [fork_server().start(cmd) for _ in range(2)]  # two processes at once
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outputs]
    assert sorted(os.listdir(base / "ae")) == ["1", "2"]


def test_the_verify_child_dies_with_its_parent():
    import signal

    from export import saved_model

    code = ("import ctypes, os, signal, sys\n"
            "libc = ctypes.CDLL('libc.so.6', use_errno=True)\n"
            "sig = ctypes.c_int(); libc.prctl(2, ctypes.byref(sig))\n"  # PR_GET_PDEATHSIG
            "print(sig.value)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=saved_model._die_with_parent)
    assert int(proc.stdout.strip()) == signal.SIGKILL


DISK_FULL = 200_000  # bytes: a file_size_limit past which writes fail with EFBIG, as on a full disk


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint_and_history(trained, tmp_path):
    workdir, base = copy_of(trained, tmp_path), tmp_path / "b"
    proc = fork_server()(["train.run", *without_xla([*BASE, "--epochs=3", f"--workdir={workdir}"])],
                         file_size_limit=DISK_FULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"cannot write the checkpoint of step 6 .*resume from \S+ckpt-4$", last_line(proc))
    # the last checkpoint stays the one to resume from; epoch 2's row, written before its failed
    # checkpoint, is dropped by the resumed run (test_faults: repair_history)
    assert 'model_checkpoint_path: "ckpt-4"' in (workdir / "checkpoints" / "checkpoint").read_text()
    assert history(workdir)[:2] == [0, 1]
    proc = fork_server()(["export.run", f"--workdir={workdir}", f"--export_base={base}"], file_size_limit=DISK_FULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot write the SavedModel" in last_line(proc) and os.listdir(base / "ae") == []


def test_a_config_json_that_is_not_a_config_is_one_line(train_run, tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text("[]")
    proc = train_run(*BASE, f"--workdir={workdir}")
    assert proc.returncode == 2 and "config.json is not a train.run config" in last_line(proc)
    assert "Traceback" not in proc.stderr and (workdir / "config.json").read_text() == "[]"


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only filesystem (a tmpfs mounted ro); skipped where mounting is not allowed."""
    path = tmp_path / "ro"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only filesystem here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_a_read_only_workdir_or_export_base_is_one_line(trained, train_run, tmp_path, read_only_dir):
    proc = train_run(*BASE, f"--workdir={read_only_dir / 'w'}")
    assert proc.returncode == 2 and "cannot be written" in last_line(proc) and "Traceback" not in proc.stderr
    workdir = tmp_path / "w"
    proc = train_run(*BASE, f"--workdir={workdir}", f"--export_base={read_only_dir}")
    assert proc.returncode == 2 and "--export_base" in last_line(proc) and not workdir.exists()
    workdir = copy_of(trained, tmp_path)
    proc = run_module("export.run", f"--workdir={workdir}", f"--export_base={read_only_dir / 'b'}", timeout=120)
    assert proc.returncode == 2 and "Read-only file system" in last_line(proc) and "Traceback" not in proc.stderr

