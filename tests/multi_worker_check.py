"""One worker of a multi-worker run, for tests/test_multi_worker.py:

    python tests/multi_worker_check.py WEIGHTS.npz --strategy=multi_worker --model=... (train.run's flags)

is `python -m train.run` with those flags (the same main(), messages and exit
codes; TF_CONFIG in the environment says which worker this is) that also saves
this worker's trained state to WEIGHTS.npz when the run succeeds: the trainable
weights and every optimizer variable, in a fixed order, so that the test can
compare what the workers hold at the end."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402

from train import run  # noqa: E402


def main():
    out, flags = sys.argv[1], sys.argv[2:]
    trained = []
    train = run.train

    def keep(*args, **kwargs):
        trained.append(train(*args, **kwargs))
        return trained[-1]

    run.train = keep
    run.define_flags()
    try:
        app.run(run.main, argv=["train.run", *flags], flags_parser=run.parse_flags)
    except SystemExit as e:
        if e.code not in (None, 0) or not trained:
            raise
        model = trained[-1]
        variables = list(model.trainable_weights)
        for optimizer in model.optimizer_list():
            variables += list(optimizer.variables)
        np.savez(out, *[np.asarray(v.numpy()) for v in variables])
        raise


if __name__ == "__main__":
    main()
