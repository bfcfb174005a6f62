"""--strategy=multi_worker: two worker processes on 127.0.0.1 train one run.

Each worker is tests/multi_worker_check.py (train.run's main with the same
flags, saving what the worker holds at the end), a child of the fork server
with its own TF_CONFIG and its own TMPDIR, so that the non-chief's scratch
directory can be seen to go."""

import json
import os
import re
import signal
import socket
import time

import numpy as np

from conftest import fork_server

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_check.py")
TIMEOUT = 150  # seconds for one cluster run, both workers together
WORKERS = 2


def free_ports(n):
    """n ports that were free a moment ago (bound to port 0, then released for the workers)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(args, env):
    """tests/multi_worker_check.py with `args` and `env`, in a process group of its own (a
    child of the fork server, its output and errors in one file: not pipes, which would
    stall a worker when full)."""
    return fork_server().start(args, env=env, kind="script", stderr_to_stdout=True, new_session=True)


def run_cluster(tmp_path, name, args):
    """Runs WORKERS workers of one cluster with train.run's `args` to the end.
    Returns [(returncode, stderr, weights or None, TMPDIR)] by worker index;
    whatever happens, no worker (nor any child of it) outlives the call."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]}
    procs, outs, tmpdirs = [], [], []
    try:
        for index in range(WORKERS):
            tmpdir = tmp_path / f"{name}-tmp{index}"
            tmpdir.mkdir()
            env = {
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                "CUDA_VISIBLE_DEVICES": "",
                "TMPDIR": str(tmpdir),
            }
            out = tmp_path / f"{name}-{index}.npz"
            outs.append(out)
            tmpdirs.append(tmpdir)
            procs.append(start([DRIVER, out, *args], env))
        deadline = time.monotonic() + TIMEOUT
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            try:  # children that the worker started (the export check) go too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    results = []
    for proc, out, tmpdir in zip(procs, outs, tmpdirs):
        text = proc.communicate()[0]
        weights = list(np.load(out).values()) if out.exists() else None
        results.append((proc.returncode, text, weights, tmpdir))
    return results


def check_cluster_run(results):
    """Both workers succeeded, hold the same state, and the non-chief removed its scratch directory."""
    for index, (code, log, weights, tmpdir) in enumerate(results):
        assert code == 0, f"worker {index} exited {code}:\n{log[-3000:]}"
        assert weights, f"worker {index} saved no weights"
        assert os.listdir(tmpdir) == [], f"worker {index} left {os.listdir(tmpdir)} in its TMPDIR"
    chief, other = results[0][2], results[1][2]
    assert len(chief) == len(other)
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)


def checkpoint_steps(workdir):
    return sorted(int(m.group(1)) for f in os.listdir(workdir / "checkpoints")
                  if (m := re.match(r"ckpt-(\d+)\.index$", f)))


def test_two_workers_train_dcgan_as_one_device_does_only_the_chief_writes_and_both_resume(tmp_path):
    """--batch_size is the global batch: each worker trains on its half of every
    batch of the one-device run, and the two workers end where one device does.
    (No dropout: its masks are drawn per replica. The generator's noise is one
    global draw that the replicas share out. float32: in bfloat16, a half
    batch rounds differently from a whole one. No XLA: --jit_compile=auto
    compiles dcgan's step on one CPU but not for several replicas, and XLA's
    random numbers are not the plain kernels'.) Then both workers are started
    again with more epochs, and resume from the chief's checkpoint."""
    workdir, base = tmp_path / "w", tmp_path / "serving"
    args = ["--model=dcgan", "--latent_dim=8", "--d_dropout=0", "--mixed_precision=off", "--jit_compile=off",
            "--dataset=digits",
            "--batch_size=16", "--steps_per_epoch=3", "--verbose=0"]
    one_device = tmp_path / "one.npz"
    proc = start([DRIVER, one_device, *args, "--epochs=1", f"--workdir={tmp_path / 'one'}"],
                 {"CUDA_VISIBLE_DEVICES": ""})
    try:  # alongside the cluster, which spends much of its time waiting
        results = run_cluster(tmp_path, "dcgan", [*args, "--epochs=1", "--strategy=multi_worker",
                                                  f"--workdir={workdir}", f"--export_base={base}"])
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, proc.communicate()[0][-3000:]
    check_cluster_run(results)
    expected = list(np.load(one_device).values())
    assert len(expected) == len(results[0][2])
    for a, b in zip(results[0][2], expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert checkpoint_steps(workdir) == [3]
    for path in ("config.json", "history.csv", "model.keras", "samples/epoch_0001.png", "tensorboard"):
        assert (workdir / path).exists(), path
    assert sorted(os.listdir(base / "dcgan")) == ["1"]  # one export, by the chief
    assert len(open(workdir / "history.csv").read().strip().splitlines()) == 2  # header and one epoch

    results = run_cluster(tmp_path, "again", [*args, "--epochs=2", "--strategy=multi_worker", f"--workdir={workdir}"])
    check_cluster_run(results)
    for index, (_, log, _, _) in enumerate(results):
        assert re.search(r"resumed from \S+/w/checkpoints/ckpt-3 at epoch 1", log), f"worker {index}:\n{log[-2000:]}"
    assert checkpoint_steps(workdir) == [3, 6]
    rows = open(workdir / "history.csv").read().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]
