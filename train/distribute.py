"""tf.distribute strategies of train.run, and who writes the run's files."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def strategy(name):
    """default: one device; mirrored: all local devices; multi_worker: the
    cluster that TF_CONFIG describes (MultiWorkerMirroredStrategy)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG (see README.md, Scaling out)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")


def is_chief(strat):
    """Whether this process writes checkpoints, samples, history and exports:
    always, except on the non-chief workers of a multi-worker cluster."""
    if not isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    tf_config = json.loads(os.environ["TF_CONFIG"])
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def scratch_dir(workdir):
    """Where a non-chief worker writes what every worker must write (checkpoints)."""
    return tempfile.mkdtemp(prefix=f"{os.path.basename(os.path.abspath(workdir))}-worker-")


def remove_scratch(path):
    shutil.rmtree(path, ignore_errors=True)
