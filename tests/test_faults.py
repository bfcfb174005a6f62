"""Faults a long run meets: bounded checkpoints, a crash while saving, mismatched reruns, shapes the nets cannot take."""

import os
import re

from conftest import run_module

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
