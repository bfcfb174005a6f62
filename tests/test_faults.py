"""Faults a long run meets: bounded checkpoints, a crash while saving, mismatched reruns, shapes the nets
cannot take; damaged checkpoint indexes, concurrent runs and exports, kill -9 at any moment, flags that
cannot train, mixed-up workdirs."""

import os
import re
import shutil

import pytest

from conftest import run_module

BASE = ["--model=ae", "--net=mlp", "--latent_dim=2", "--dataset=digits", "--batch_size=32", "--steps_per_epoch=2",
        "--verbose=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir of BASE trained for 2 epochs, once per module; tests take a copy_of it."""
    workdir = tmp_path_factory.mktemp("trained") / "w"
    proc = run_module("train.run", *BASE, "--epochs=2", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir


def copy_of(trained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir)
    return workdir


def ckpts(workdir):
    return sorted(int(m.group(1)) for f in os.listdir(workdir / "checkpoints")
                  if (m := re.match(r"ckpt-(\d+)\.index$", f)))


def last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def test_keep_checkpoints_bounds_disk_use_and_a_half_written_checkpoint_is_ignored(trained, train_run, tmp_path):
    workdir = copy_of(trained, tmp_path)  # checkpoints of steps 2 and 4
    proc = train_run(*BASE, "--epochs=4", "--keep_checkpoints=2", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ckpts(workdir) == [6, 8]
    # A crash while saving step 10: its files exist, the `checkpoint` index was not yet updated.
    for suffix in (".index", ".data-00000-of-00001"):
        (workdir / "checkpoints" / f"ckpt-10{suffix}").write_bytes(b"half written")
    proc = train_run(*BASE, "--epochs=5", "--keep_checkpoints=2", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"resumed from \S+ckpt-8 at epoch 4", proc.stderr), proc.stderr[-2000:]


def test_rerun_with_other_options_is_refused_and_changes_nothing(trained, train_run, tmp_path):
    workdir = copy_of(trained, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    proc = train_run(*BASE, "--epochs=3", "--latent_dim=3", f"--workdir={workdir}")
    assert proc.returncode != 0
    assert "was trained with --latent_dim=2, not 3" in last_line(proc)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()} == before


def test_a_shape_the_conv_nets_cannot_take_is_a_one_line_error(train_run, tmp_path):
    proc = train_run("--model=vae", "--net=conv", "--dataset=digits", "--image_size=9",
                      f"--workdir={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert "conv nets cannot take images of shape (9, 9, 1)" in last_line(proc)
    assert "use net=mlp" in last_line(proc)


# ---------------------------------------------------------------------------
# round two: damaged checkpoints, locks, history, flags, exports


def history(workdir):
    lines = (workdir / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,")
    return [int(line.split(",")[0]) for line in lines[1:]]


def test_a_damaged_checkpoint_index_resumes_from_the_newest_checkpoint(trained, train_run, tmp_path):
    workdir = copy_of(trained, tmp_path)
    (workdir / "checkpoints" / "checkpoint").write_text("garbage")
    proc = train_run(*BASE, "--epochs=3", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"resuming from \S+ckpt-4 \(the newest checkpoint that restores\)", proc.stderr)
    assert ckpts(workdir)[-1] == 6 and 4 in ckpts(workdir)  # nothing of the old lineage overwritten
    assert history(workdir) == [0, 1, 2]


def test_a_workdir_with_history_but_no_checkpoint_refuses_to_start_over_without_restart(trained, train_run,
                                                                                      tmp_path):
    workdir = copy_of(trained, tmp_path)
    for f in (workdir / "checkpoints").iterdir():
        f.unlink()
    old = (workdir / "history.csv").read_text()
    proc = train_run(*BASE, "--epochs=2", f"--workdir={workdir}")
    assert proc.returncode == 2 and "has a history of 2 epochs but no checkpoint" in last_line(proc)
    assert "--restart" in last_line(proc) and (workdir / "history.csv").read_text() == old
    proc = train_run(*BASE, "--epochs=1", "--restart", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert history(workdir) == [0]
    (aside,) = workdir.glob("history.before-restart-*.csv")
    assert aside.read_text() == old  # moved aside, never deleted


def test_a_second_run_on_a_workdir_in_use_exits_at_once_naming_the_holder(train_run, tmp_path):
    from train import workdir as workdirs

    workdir = tmp_path / "w"
    workdir.mkdir()
    with workdirs.Lock(str(workdir)):  # as a running train.run holds it
        proc = train_run(*BASE, "--epochs=1", f"--workdir={workdir}")
    assert proc.returncode == 2
    assert f"is in use by another train.run (pid {os.getpid()})" in last_line(proc)
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # nothing written


def test_repair_history_keeps_one_well_formed_row_per_completed_epoch(tmp_path):
    from train import workdir as workdirs

    (tmp_path / "history.csv").write_text(
        "epoch,loss,minutes\n0,1.5,0.1\n1,1.4,0.2\n2,1.3,0.32,1.2,0.4\n2,1.3,0.3\n1,1.35,0.25\n3,1.2,0.4\n4,1.1"
    )  # row 2 cut and glued to the next, epoch 1 twice (the later wins), epochs 3-4 not checkpointed
    assert workdirs.repair_history(str(tmp_path), completed_epochs=3) == 3
    assert (tmp_path / "history.csv").read_text().splitlines() == [
        "epoch,loss,minutes", "0,1.5,0.1", "1,1.35,0.25", "2,1.3,0.3"]


def test_a_failed_restore_leaves_config_json_untouched(trained, train_run, tmp_path):
    workdir = copy_of(trained, tmp_path)
    for index in (workdir / "checkpoints").glob("ckpt-*.index"):
        index.write_bytes(b"garbage")
    before = (workdir / "config.json").stat().st_mtime_ns
    proc = train_run(*BASE, "--epochs=3", f"--workdir={workdir}")
    assert proc.returncode == 2 and "cannot restore any checkpoint" in last_line(proc)
    assert (workdir / "config.json").stat().st_mtime_ns == before


def test_a_run_killed_after_its_last_checkpoint_finishes_on_rerun(trained, train_run, tmp_path):
    """Killed between the last epoch's checkpoint and model.keras: the rerun has
    no epoch to train, still fits the sampler, redraws the grid, saves and exports."""
    workdir, base = copy_of(trained, tmp_path), tmp_path / "b"
    (workdir / "model.keras").unlink()
    proc = train_run(*BASE, "--epochs=2", f"--workdir={workdir}", f"--export_base={base}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (workdir / "model.keras").exists() and (base / "ae" / "1" / "saved_model.pb").exists()
    assert history(workdir) == [0, 1]


def test_a_kill_between_the_first_row_and_the_first_checkpoint_is_not_a_lost_run(tmp_path):
    """History writes epoch 0's row before its checkpoint: that row alone does
    not prove a checkpoint existed, so the rerun starts (and rewrites it)."""
    from train import workdir as workdirs

    workdir = tmp_path / "w"
    workdir.mkdir()
    workdirs.write_history(str(workdir), ["epoch", "loss"], [["0", "1.0"]])
    assert not workdirs.trained_without_checkpoint(str(workdir))
    workdirs.write_history(str(workdir), ["epoch", "loss"], [["0", "1.0"], ["1", "0.9"]])
    assert workdirs.trained_without_checkpoint(str(workdir))
