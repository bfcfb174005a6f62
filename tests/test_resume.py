"""Interrupted runs: SIGTERM, then SIGKILL of the rerun, at a train.run (each a child of the
fork server: a process of its own, with its signal handlers), then the same command again to the
end (with --lr_decay, so the schedule must resume where it stopped too)."""

import os
import re
import signal
import time

import numpy as np
import pytest

from conftest import fork_server

# No XLA (the plain step resumes the same way; test_precision.py covers the compiled
# one): 2.5 s less for each of the test's four runs.
ARGS = ["--model=vae", "--net=conv", "--latent_dim=4", "--batch_size=64", "--steps_per_epoch=8",
        "--epochs=4", "--lr_decay=cosine", "--deterministic", "--verbose=0", "--jit_compile=off"]


def command(workdir):
    return ["train.run", f"--workdir={workdir}", *ARGS]


def final_weights(workdir):
    import keras

    import zoo  # noqa: F401

    return keras.models.load_model(os.path.join(workdir, "model.keras")).get_weights()


def checkpoint_steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.exists(os.path.join(folder, "checkpoint")):
        return []
    return sorted(int(m.group(1)) for f in os.listdir(folder) if (m := re.match(r"ckpt-(\d+)\.index$", f)))


def interrupt(workdir, sig, after=0):
    """Starts the run, sends `sig` once it has saved a checkpoint past step `after`;
    returns (process, stderr)."""
    proc = fork_server().start(command(workdir))
    try:
        deadline = time.time() + 300
        while not [s for s in checkpoint_steps(workdir) if s > after]:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("whole") / "w")
    proc = fork_server()(command(workdir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return final_weights(workdir)


def test_a_run_stopped_by_sigterm_then_killed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, uninterrupted):
    workdir = str(tmp_path / "w")
    proc, stderr = interrupt(workdir, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM
    message = stderr.strip().splitlines()[-1]
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", message).group(1))
    assert max(checkpoint_steps(workdir)) == step < 32  # SIGTERM saved where it stopped, before the end
    proc, stderr = interrupt(workdir, signal.SIGKILL, after=step)  # the same command, killed in turn
    assert proc.returncode == -signal.SIGKILL and "resumed from" in stderr
    assert max(checkpoint_steps(workdir)) < 32  # 4 epochs x 8 steps
    resumed = fork_server()(command(workdir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    weights = final_weights(workdir)
    assert len(weights) == len(uninterrupted)
    for a, b in zip(weights, uninterrupted):
        np.testing.assert_array_equal(a, b)
    rows = open(os.path.join(workdir, "history.csv")).read().strip().splitlines()
    assert rows[0].startswith("epoch") and rows[-1].startswith("3,")
