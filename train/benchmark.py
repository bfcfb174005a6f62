"""Measure a model: python -m train.benchmark --model=dcgan [--batch_size=256] [--vs_reference]

Prints one JSON line: training images/s at steady state (after tracing, on a
cached batch so the input pipeline is not what is measured), serving latency of
the exported `generate` (ms per batch of 1 and of 64, loaded as TF Serving would)
and the process's peak memory. --vs_reference also runs
../shared/bench/ref_tf_dcgan.py (the TF tutorial's DCGAN step, float32) before
and after ours in the same invocation and prints the ratio of our training
speed to the mean of its two (ratio_vs_reference); the second run takes twice
the steps, so the difference of their CPU times gives the reference's images
per CPU second too, and ratio_per_cpu_s compares the work per image, which
other load on the machine disturbs less than wall time. With --vs_reference a
model is measured with the reference's nets: width 1 and no hidden layer in D
(d_hidden 0), where it has those options.
--torch_python=PYTHON runs its PyTorch twin too.
"""

import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from train import cli  # noqa: E402
from train import precision  # noqa: E402
from zoo import serving  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program, so that
    other programs (and tests) can import this module."""
    flags.DEFINE_string("model", "dcgan", f"model to measure: {', '.join(zoo.names())}")
    flags.DEFINE_integer("batch_size", 256, "training batch size")
    flags.DEFINE_integer("image_size", 28, "square image size")
    flags.DEFINE_integer("channels", 1, "image channels")
    flags.DEFINE_integer("steps", 50, "timed training steps (the reference runs this many, then twice as many)")
    flags.DEFINE_enum("mixed_precision", "auto", precision.CHOICES, "compute dtype policy (as train.run's)")
    flags.DEFINE_bool("vs_reference", False, "also run the reference DCGAN step and print the ratio")
    flags.DEFINE_string("reference", None, "path of ref_tf_dcgan.py (default: ../shared/bench/ next to the repository)")
    flags.DEFINE_bool("xla_vs_plain", False, "also time the train step compiled with XLA against the plain one "
                      "(twice each, alternating) and print their ratio: what --jit_compile=auto's per-model choice rests on")
    flags.DEFINE_string("torch_python", None, "a Python with torch installed: also run ../shared/bench/ref_torch_dcgan.py with it")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _StepClock(keras.callbacks.Callback):
    """Wall and process CPU time from the start of batch `first` to the end of
    the last batch; the end waits for the step's result, so it is all counted."""

    def __init__(self, first):
        super().__init__()
        self.first = first
        self.start = self.end = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.first:
            self.start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.first:
            float(next(iter(logs.values())))  # waits for the step
            self.end = (time.perf_counter(), time.process_time())


def training_images_per_second(model, batch_size, steps, image_shape, warmup=3):
    """(images per wall second, images per CPU second of this process) of
    model.fit's compiled train step on one cached batch.

    Only the steps after `warmup` (tracing, first calls) are timed, inside one
    fit call: creating and destroying a tf.data iterator is not a training
    step, and destroying one can wait for seconds on tf.data's autotuning
    thread, which made the figure swing by 2x from run to run."""
    rng = np.random.RandomState(0)
    images = rng.rand(batch_size, *image_shape).astype(np.float32)
    labels = rng.randint(0, max(model.num_classes, 1), batch_size).astype(np.int32)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    clock = _StepClock(first=warmup)
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock])
    images = steps * batch_size
    # Per CPU-second too: steadier than wall time when other processes share the cores.
    wall, cpu = (end - start for end, start in zip(clock.end, clock.start))
    return images / wall, images / cpu


def xla_vs_plain(build, batch_size, steps, image_shape, rounds=2):
    """{"xla_speedup": XLA images/s over plain images/s, "xla_speedup_per_cpu_s": the same per CPU second}
    of the train step of fresh models from build(), compiled without and with XLA
    in turn `rounds` times (alternating, so load that comes and goes hits both)."""
    rates = {False: [], True: []}
    for _ in range(rounds):
        for jit in (False, True):
            model = build()
            model.compile(**model.compile_defaults(), jit_compile=jit)
            rates[jit].append(training_images_per_second(model, batch_size, steps, image_shape))
    mean = {jit: np.mean(r, axis=0) for jit, r in rates.items()}
    return {"xla_speedup": float(mean[True][0] / mean[False][0]),
            "xla_speedup_per_cpu_s": float(mean[True][1] / mean[False][1])}


def serving_latency_ms(model, repeats=20):
    """ms per call of the exported `generate` signature, for batches of 1 and 64."""
    from export.saved_model import export, example_inputs

    with tempfile.TemporaryDirectory() as base:
        path = export(model, base, "bench", verify=False)
        fn = tf.saved_model.load(path).signatures["generate"]
        typed = model.serving_signatures()["generate"]  # the loaded signature takes keyword inputs
        out = {}
        for n in (1, 64):
            inputs = {k: tf.constant(v) for k, v in example_inputs(typed, serving.index_bounds(model), n=n).items()}
            fn(**inputs)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(**inputs)["images"].numpy()
            out[f"serving_ms_batch_{n}"] = 1000 * (time.perf_counter() - start) / repeats
    return out


def reference_images_per_second(args):
    """Runs a reference script (argv `args`) in a subprocess; returns (the
    images_per_s it prints, the CPU seconds the subprocess used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(args, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"images_per_s=([\d.]+)", proc.stdout)
    if not match:
        raise RuntimeError(f"{os.path.basename(args[1])} printed no figure: {proc.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return float(match.group(1)), cpu


def bench_script(name, reference=None):
    """Path of a script of ../shared/bench/ (`reference`, --reference, overrides ref_tf_dcgan.py's)."""
    if name == "ref_tf_dcgan.py" and reference:
        path = reference
    else:
        path = os.path.join(os.path.dirname(ROOT), "shared", "bench", name)
    if not os.path.exists(path):
        cli.fail(f"no reference at {path}; pass --reference=PATH")
    return path


def main(argv):
    logging.set_verbosity(logging.WARNING)
    def script_argv(python, script, steps):
        return [python, bench_script(script, FLAGS.reference), "--batch", str(FLAGS.batch_size), "--steps", str(steps)]

    references = []
    if FLAGS.vs_reference:  # before and after ours: the mean evens out load that comes and goes
        references.append(reference_images_per_second(script_argv(sys.executable, "ref_tf_dcgan.py", FLAGS.steps)))
    policy = precision.apply(FLAGS.mixed_precision)
    image_shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    options = {}
    if FLAGS.vs_reference:  # the reference's nets: full width, no hidden layer in D
        fields = {f.name for f in dataclasses.fields(zoo.get(FLAGS.model).Config)}
        options = {k: v for k, v in {"width": 1.0, "d_hidden": 0}.items() if k in fields}
    def build():
        return zoo.build(FLAGS.model, image_shape=image_shape, num_classes=10, **options)

    model = build()
    model.compile(**model.compile_defaults())
    result = {
        "model": FLAGS.model,
        "batch_size": FLAGS.batch_size,
        "image_shape": list(image_shape),
        "policy": policy,
        **options,
    }
    result["train_images_per_s"], result["train_images_per_cpu_s"] = training_images_per_second(
        model, FLAGS.batch_size, FLAGS.steps, image_shape
    )
    result.update(serving_latency_ms(model))
    if FLAGS.xla_vs_plain:
        result.update(xla_vs_plain(build, FLAGS.batch_size, FLAGS.steps, image_shape))
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if FLAGS.vs_reference:
        # The second run takes twice the steps: the difference of the two runs'
        # CPU time is the reference's steady-state CPU per image (start-up cancels).
        references.append(reference_images_per_second(script_argv(sys.executable, "ref_tf_dcgan.py", 2 * FLAGS.steps)))
        result["reference_images_per_s"] = sum(rate for rate, _ in references) / len(references)
        result["ratio_vs_reference"] = result["train_images_per_s"] / result["reference_images_per_s"]
        extra_cpu = references[1][1] - references[0][1]
        if extra_cpu > 0:
            result["reference_images_per_cpu_s"] = FLAGS.steps * FLAGS.batch_size / extra_cpu
            result["ratio_per_cpu_s"] = result["train_images_per_cpu_s"] / result["reference_images_per_cpu_s"]
    if FLAGS.torch_python:
        torch_reference = script_argv(FLAGS.torch_python, "ref_torch_dcgan.py", FLAGS.steps)
        result["torch_reference_images_per_s"] = reference_images_per_second(torch_reference)[0]
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
