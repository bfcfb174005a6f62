"""tf.distribute strategies of train.run, and who writes the run's files.

Multi-worker runs (`--strategy=multi_worker`): every worker runs the same
command with the same --workdir path, and TF_CONFIG says which task it is.

- Data: each worker builds the same pipeline of *global* batches
  (--batch_size is the global batch); `shard_by_data` makes tf.distribute
  split every global batch between the workers (AutoShardPolicy.DATA after
  its rebatch), so N workers take the same steps on the same batches as one
  device, and resuming at a step means the same thing everywhere.
- Files: the chief writes checkpoints, samples, history, TensorBoard,
  model.keras and exports into the workdir. Saving a checkpoint involves
  collectives (Keras metrics are sync-on-read variables), so every worker
  saves: the others into a scratch directory of their own, removed at the
  end. Every worker restores from the chief's checkpoints in the workdir, so
  the workdir must be on a filesystem they all see; `check_agree` stops the
  run when they did not restore the same step.
- SIGTERM on any worker stops all of them after the same batch
  (`any_worker`), so that they all save and stop together.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def strategy(name):
    """default: one device; mirrored: all local devices; multi_worker: the
    cluster that TF_CONFIG describes (MultiWorkerMirroredStrategy). Create it
    before other TensorFlow work: the multi-worker one configures the runtime's
    collectives and waits for every worker of the cluster to start."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        tf_config = _tf_config()
        if not tf_config.get("cluster") or not tf_config.get("task"):
            raise ValueError(
                "--strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task' keys "
                "(see README.md, Scaling out)"
            )
        return _MultiWorkerStrategy()
    raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")


def _tf_config():
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from None


def is_multi_worker(strat):
    return isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strat):
    """Whether this process writes checkpoints, samples, history and exports:
    always, except on the non-chief workers of a multi-worker cluster (the
    chief is task `chief` if the cluster has one, else worker 0)."""
    if not is_multi_worker(strat):
        return True
    tf_config = _tf_config()
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def scratch_dir(workdir):
    """Where a non-chief worker writes what every worker must write (checkpoints)."""
    return tempfile.mkdtemp(prefix=f"{os.path.basename(os.path.abspath(workdir))}-worker-")


def remove_scratch(path):
    shutil.rmtree(path, ignore_errors=True)


def shard_by_data(dataset):
    """The pipeline of global batches, marked so that a multi-worker strategy
    gives each worker its share of every global batch. (AUTO would try to shard
    by files first, find none in a dataset from tensors, warn and fall back to
    this.) Other strategies ignore the option."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3's fit calls it
    with (keras-team/keras#20585): fit reduces a structure, the first
    (images, labels) batch, which the strategy's reduce cannot take; and it
    averages every scalar metric of a train step with axis=0, which a scalar
    does not have. Here a structure is reduced leaf by leaf and a scalar over
    the replicas (axis=None), which is what Keras means by it."""

    def reduce(self, reduce_op, value, axis):
        def one(v):
            local = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else tf.convert_to_tensor(v)
            return super(_MultiWorkerStrategy, self).reduce(reduce_op, v, axis if local.shape.rank else None)

        return tf.nest.map_structure(one, value)


def _sum_over_workers(strat, values):
    """The sum over all replicas of every worker of float64 `values` (a collective:
    every worker must call it at the same point)."""
    value = tf.constant(np.asarray(values, np.float64))
    per_replica = strat.experimental_distribute_values_from_function(lambda _: value)
    return strat.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def any_worker(strat):
    """A function flag -> whether the flag is set on any worker, or None where
    there are no other workers (the flag is then what it is)."""
    if not is_multi_worker(strat):
        return None
    return lambda flag: bool(_sum_over_workers(strat, [1.0 if flag else 0.0])[0] > 0)


def check_agree(strat, **counters):
    """Raises ValueError on every worker unless all workers hold the same integer
    counters (e.g. the step they restored). n * sum(v^2) == (sum v)^2 exactly
    when all n values are equal, so one collective tells every worker."""
    if not is_multi_worker(strat):
        return
    names = sorted(counters)
    mine = [float(counters[k]) for k in names]
    sums = _sum_over_workers(strat, [1.0, *mine, *(v * v for v in mine)])
    n, total, squares = sums[0], sums[1 : 1 + len(names)], sums[1 + len(names) :]
    for name, mean, s, t in zip(names, total / n, squares, total):
        if n * s != t * t:
            raise ValueError(
                f"the workers restored different checkpoints ({name} {counters[name]} on this worker, "
                f"{mean:g} on average over the workers): every worker reads the chief's checkpoints from "
                f"the same --workdir path, which must be on a filesystem that all workers share"
            )
