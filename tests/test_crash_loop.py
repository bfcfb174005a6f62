"""The crash loop: kill -9 at random moments, then the same command finishes whole."""

import os
import random
import subprocess
import sys
import time

from conftest import ROOT
from test_faults import BASE, history


def test_kill_9_at_random_moments_loses_no_history_row(tmp_path):
    """The crash loop: kill -9 at random moments (at least 10 times) of a run on
    digits; then the same command finishes with exactly one well-formed row per
    epoch, and exports."""
    workdir, base = tmp_path / "w", tmp_path / "b"
    # of one step each: an epoch ends every ~0.1 s, so kills land around every write; the ten
    # seeded waits leave at most 16 s of training after a 4 s start-up, far from 300 epochs
    epochs = 300
    cmd = [sys.executable, "-m", "train.run", *BASE, "--steps_per_epoch=1", f"--epochs={epochs}",
           f"--workdir={workdir}", f"--export_base={base}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rng = random.Random(0)
    for i in range(10):
        with open(tmp_path / f"stderr-{i}.txt", "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)
            time.sleep(rng.uniform(3.5, 7.5))  # start-up takes 4-6 s here; then it trains
            assert proc.poll() is None, (tmp_path / f"stderr-{i}.txt").read_text()[-1500:]  # the kill lands mid-run
            proc.kill()
            proc.wait()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert history(workdir) == list(range(epochs))
    rows = (workdir / "history.csv").read_text().splitlines()
    assert len({len(r.split(",")) for r in rows}) == 1  # every row has the header's fields
    assert (base / "ae" / "1" / "saved_model.pb").exists()
    assert not list((workdir / "checkpoints").glob("*_temp*"))

