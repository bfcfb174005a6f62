"""The crash loop: kill -9 at random moments, then the same command finishes whole."""

import random
import time

from conftest import fork_server, without_xla
from test_faults import BASE, history


def rows(workdir):
    path = workdir / "history.csv"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_9_at_random_moments_loses_no_history_row(tmp_path):
    """The crash loop: kill -9 at random moments (at least 10 times) of a run on
    digits; then the same command finishes with exactly one well-formed row per
    epoch, and exports. Each run is a child of the fork server (its start-up
    without the imports of TensorFlow, Keras and TensorFlow Probability: 2.5-3 s
    here, then ~15 epochs a second): half the kills land at a random moment
    from its start (most in the start-up: restoring, repairing the history;
    some in training), half at a random moment within 0.8 s of its first new
    row (around its writes). The kills leave 30-100 of the 150 epochs done."""
    workdir, base = tmp_path / "w", tmp_path / "b"
    epochs = 150  # of one step each: an epoch ends every ~0.07 s, so kills land around every write
    cmd = ["train.run", *without_xla([*BASE, "--steps_per_epoch=1", f"--epochs={epochs}", f"--workdir={workdir}",
                                      f"--export_base={base}"])]
    server = fork_server()
    rng = random.Random(0)
    for i in range(10):
        before = rows(workdir)
        proc = server.start(cmd)
        try:
            if i % 2:
                deadline = time.monotonic() + 120
                while rows(workdir) <= before and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.03)
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                time.sleep(rng.uniform(0.3, 3.5))
            assert proc.poll() is None, proc.communicate()[1][-1500:]  # the kill lands mid-run
        finally:
            proc.kill()
            proc.discard()
    done = server(cmd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert history(workdir) == list(range(epochs))
    lines = (workdir / "history.csv").read_text().splitlines()
    assert len({len(r.split(",")) for r in lines}) == 1  # every row has the header's fields
    assert (base / "ae" / "1" / "saved_model.pb").exists()
    assert not list((workdir / "checkpoints").glob("*_temp*"))
