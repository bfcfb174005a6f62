"""Faults a long run meets: bounded checkpoints, a crash while saving, mismatched reruns, shapes the nets
cannot take; damaged checkpoint indexes, concurrent runs and exports, kill -9 at any moment, flags that
cannot train, mixed-up workdirs."""

import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_module

BASE = ["--model=ae", "--net=mlp", "--latent_dim=2", "--dataset=digits", "--batch_size=32", "--steps_per_epoch=2",
        "--verbose=0"]


def ckpts(workdir):
    return sorted(int(m.group(1)) for f in os.listdir(workdir / "checkpoints")
                  if (m := re.match(r"ckpt-(\d+)\.index$", f)))


def last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def test_keep_checkpoints_bounds_disk_use_and_a_half_written_checkpoint_is_ignored(tmp_path):
    workdir = tmp_path / "w"
    proc = run_module("train.run", *BASE, "--epochs=4", "--keep_checkpoints=2", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ckpts(workdir) == [6, 8]
    # A crash while saving step 10: its files exist, the `checkpoint` index was not yet updated.
    for suffix in (".index", ".data-00000-of-00001"):
        (workdir / "checkpoints" / f"ckpt-10{suffix}").write_bytes(b"half written")
    proc = run_module("train.run", *BASE, "--epochs=5", "--keep_checkpoints=2", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"resumed from \S+ckpt-8 at epoch 4", proc.stderr), proc.stderr[-2000:]


def test_rerun_with_other_options_is_refused_and_changes_nothing(tmp_path):
    workdir = tmp_path / "w"
    assert run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}").returncode == 0
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    proc = run_module("train.run", *BASE, "--epochs=2", "--latent_dim=3", f"--workdir={workdir}")
    assert proc.returncode != 0
    assert "was trained with --latent_dim=2, not 3" in last_line(proc)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()} == before


def test_a_shape_the_conv_nets_cannot_take_is_a_one_line_error(tmp_path):
    proc = run_module("train.run", "--model=vae", "--net=conv", "--dataset=digits", "--image_size=9",
                      f"--workdir={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert "conv nets cannot take images of shape (9, 9, 1)" in last_line(proc)
    assert "use --net=mlp" in last_line(proc)


# ---------------------------------------------------------------------------
# round two: damaged checkpoints, locks, history, flags, exports


def history(workdir):
    lines = (workdir / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,")
    return [int(line.split(",")[0]) for line in lines[1:]]


def test_a_damaged_checkpoint_index_resumes_from_the_newest_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    assert run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}").returncode == 0
    (workdir / "checkpoints" / "checkpoint").write_text("garbage")
    proc = run_module("train.run", *BASE, "--epochs=3", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"resuming from \S+ckpt-4 \(the newest checkpoint that restores\)", proc.stderr)
    assert ckpts(workdir)[-1] == 6 and 4 in ckpts(workdir)  # nothing of the old lineage overwritten
    assert history(workdir) == [0, 1, 2]


def test_a_workdir_with_history_but_no_checkpoint_refuses_to_start_over_without_restart(tmp_path):
    workdir = tmp_path / "w"
    assert run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}").returncode == 0
    for f in (workdir / "checkpoints").iterdir():
        f.unlink()
    old = (workdir / "history.csv").read_text()
    proc = run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}")
    assert proc.returncode == 2 and "has a history of 2 epochs but no checkpoint" in last_line(proc)
    assert "--restart" in last_line(proc) and (workdir / "history.csv").read_text() == old
    proc = run_module("train.run", *BASE, "--epochs=1", "--restart", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert history(workdir) == [0]
    (aside,) = workdir.glob("history.before-restart-*.csv")
    assert aside.read_text() == old  # moved aside, never deleted


def test_a_second_run_on_a_workdir_in_use_exits_at_once_naming_the_holder(tmp_path):
    from train import workdir as workdirs

    workdir = tmp_path / "w"
    workdir.mkdir()
    with workdirs.Lock(str(workdir)):  # as a running train.run holds it
        proc = run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}")
    assert proc.returncode == 2
    assert f"is in use by another train.run (pid {os.getpid()})" in last_line(proc)
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # nothing written
    proc = run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}")  # released: it runs
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_repair_history_keeps_one_well_formed_row_per_completed_epoch(tmp_path):
    from train import workdir as workdirs

    (tmp_path / "history.csv").write_text(
        "epoch,loss,minutes\n0,1.5,0.1\n1,1.4,0.2\n2,1.3,0.32,1.2,0.4\n2,1.3,0.3\n1,1.35,0.25\n3,1.2,0.4\n4,1.1"
    )  # row 2 cut and glued to the next, epoch 1 twice (the later wins), epochs 3-4 not checkpointed
    assert workdirs.repair_history(str(tmp_path), completed_epochs=3) == 3
    assert (tmp_path / "history.csv").read_text().splitlines() == [
        "epoch,loss,minutes", "0,1.5,0.1", "1,1.35,0.25", "2,1.3,0.3"]


@pytest.mark.parametrize("flag, message", [
    ("--epochs=0", "--epochs=0 must be at least 1"),
    ("--epochs=-3", "--epochs=-3 must be at least 1"),
    ("--learning_rate=0", r"--learning_rate=0.0 must be a finite number > 0"),
    ("--learning_rate=-0.001", r"--learning_rate=-0.001 must be a finite number > 0"),
    ("--learning_rate=nan", r"--learning_rate=nan must be a finite number > 0"),
    ("--keep_checkpoints=0", "--keep_checkpoints=0 must be at least 1"),
    ("--steps_per_epoch=0", "--steps_per_epoch=0 must be at least 1"),
])
def test_flags_that_cannot_train_are_refused_before_anything_is_written(tmp_path, flag, message):
    workdir = tmp_path / "w"
    args = [a for a in BASE if not a.startswith("--steps_per_epoch")] if "steps_per_epoch" in flag else BASE
    proc = run_module("train.run", *args, flag, f"--workdir={workdir}", timeout=120)
    assert proc.returncode == 2 and re.search(message, last_line(proc)), proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_a_workdir_or_export_base_that_is_a_file_is_refused_before_training(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("")
    proc = run_module("train.run", *BASE, f"--workdir={a_file}", timeout=120)
    assert proc.returncode == 2 and f"--workdir={a_file} is a file" in last_line(proc)
    proc = run_module("train.run", *BASE, f"--workdir={tmp_path / 'w'}", f"--export_base={a_file}", timeout=120)
    assert proc.returncode == 2 and f"--export_base={a_file} is a file" in last_line(proc)
    assert not (tmp_path / "w").exists() and "Traceback" not in proc.stderr


def test_a_failed_restore_leaves_config_json_untouched(tmp_path):
    workdir = tmp_path / "w"
    assert run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}").returncode == 0
    for index in (workdir / "checkpoints").glob("ckpt-*.index"):
        index.write_bytes(b"garbage")
    before = (workdir / "config.json").stat().st_mtime_ns
    proc = run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}")
    assert proc.returncode == 2 and "cannot restore any checkpoint" in last_line(proc)
    assert (workdir / "config.json").stat().st_mtime_ns == before


def test_export_refuses_a_mixed_up_or_broken_workdir(tmp_path):
    workdir, base = tmp_path / "w", tmp_path / "b"
    assert run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}").returncode == 0
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


def test_concurrent_exports_get_distinct_versions_and_dead_exports_are_cleaned(tmp_path):
    workdir, base = tmp_path / "w", tmp_path / "b"
    assert run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}").returncode == 0
    (base / "ae" / ".tmp-7-99999").mkdir(parents=True)  # what a killed export left
    (base / "ae" / ".tmp-7-99999.io.npz").write_bytes(b"")
    cmd = [sys.executable, "-m", "export.run", f"--workdir={workdir}", f"--export_base={base}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}) for _ in range(2)]
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


def test_kill_9_at_random_moments_loses_no_history_row(tmp_path):
    """The crash loop: kill -9 at random moments (at least 10 times) of a run on
    digits; then the same command finishes with exactly one well-formed row per
    epoch, and exports."""
    workdir, base = tmp_path / "w", tmp_path / "b"
    epochs = 400  # of one step each: an epoch ends every ~0.1 s, so kills land around every write
    cmd = [sys.executable, "-m", "train.run", *BASE, "--steps_per_epoch=1", f"--epochs={epochs}",
           f"--workdir={workdir}", f"--export_base={base}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(4.0, 9.0))  # start-up takes 4-6 s here; then it trains
        assert proc.poll() is None  # still running: the kill lands mid-run
        proc.kill()
        proc.wait()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert history(workdir) == list(range(epochs))
    rows = (workdir / "history.csv").read_text().splitlines()
    assert len({len(r.split(",")) for r in rows}) == 1  # every row has the header's fields
    assert (base / "ae" / "1" / "saved_model.pb").exists()
    assert not list((workdir / "checkpoints").glob("*_temp*"))


def _disk_full():
    """In the child: writes past 200 KB fail with EFBIG, as on a full disk."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint_and_history(tmp_path):
    workdir, base = tmp_path / "w", tmp_path / "b"
    assert run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}").returncode == 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "train.run", *BASE, "--epochs=3", f"--workdir={workdir}"],
                          cwd=ROOT, capture_output=True, text=True, env=env, preexec_fn=_disk_full)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"cannot write the checkpoint of step 6 .*resume from \S+ckpt-4$", last_line(proc))
    proc = run_module("train.run", *BASE, "--epochs=3", f"--workdir={workdir}")  # space again: it resumes
    assert proc.returncode == 0 and "resumed from" in proc.stderr and history(workdir) == [0, 1, 2]
    proc = subprocess.run([sys.executable, "-m", "export.run", f"--workdir={workdir}", f"--export_base={base}"],
                          cwd=ROOT, capture_output=True, text=True, env=env, preexec_fn=_disk_full)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot write the SavedModel" in last_line(proc) and os.listdir(base / "ae") == []


def test_a_config_json_that_is_not_a_config_is_one_line(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text("[]")
    proc = run_module("train.run", *BASE, f"--workdir={workdir}", timeout=120)
    assert proc.returncode == 2 and "config.json is not a train.run config" in last_line(proc)
    assert "Traceback" not in proc.stderr and (workdir / "config.json").read_text() == "[]"


def test_a_run_killed_after_its_last_checkpoint_finishes_on_rerun(tmp_path):
    """Killed between the last epoch's checkpoint and model.keras: the rerun has
    no epoch to train, still fits the sampler, redraws the grid, saves and exports."""
    workdir, base = tmp_path / "w", tmp_path / "b"
    assert run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}").returncode == 0
    (workdir / "model.keras").unlink()
    proc = run_module("train.run", *BASE, "--epochs=1", f"--workdir={workdir}", f"--export_base={base}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (workdir / "model.keras").exists() and (base / "ae" / "1" / "saved_model.pb").exists()
    assert history(workdir) == [0]
