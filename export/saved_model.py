"""SavedModels for TF Serving: <export_base>/<model_name>/<version>/.

A version is written to a hidden sibling directory, verified in a fresh Python
process that never imports zoo (as TF Serving has no Python), and only then
renamed into place, so a server polling the base path never sees half a model.
"""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf


class ExportError(RuntimeError):
    """An export that cannot be written or does not verify."""


def versions(model_dir):
    """The integer versions present in <export_base>/<model_name>/."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit())


def example_inputs(signature, num_classes, n=3, seed=0):
    """A small batch for every input of a typed tf.function: images in [0, 1],
    z ~ N(0, I), labels in [0, num_classes)."""
    rng = np.random.RandomState(seed)
    inputs = {}
    for spec in signature.input_signature:
        shape = [n, *spec.shape[1:]]
        if spec.dtype == tf.int32:
            inputs[spec.name] = rng.randint(0, max(num_classes, 1), size=shape).astype(np.int32)
        elif spec.name == "images":
            inputs[spec.name] = rng.rand(*shape).astype(np.float32)
        else:
            inputs[spec.name] = rng.randn(*shape).astype(np.float32)
    return inputs


def export(model, export_base, name, version=None, verify=True):
    """Writes `model`'s serving_signatures() as <export_base>/<name>/<version>
    (default: the next integer) and returns that path."""
    model_dir = os.path.join(export_base, name)
    existing = versions(model_dir)
    version = int(version) if version is not None else (existing[-1] + 1 if existing else 1)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} already exists; versions only grow: pick --version={existing[-1] + 1} or omit it")
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)

    signatures = model.serving_signatures()
    archive = keras.export.ExportArchive()
    archive.track(model)
    for sig_name, fn in signatures.items():  # the first is also serving_default
        archive.add_endpoint(sig_name, fn)
    try:
        archive.write_out(tmp, verbose=False)
        if verify:
            _verify(tmp, signatures, getattr(model, "num_classes", 0))
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _verify(path, signatures, num_classes):
    """Calls every signature of the SavedModel at `path` in a fresh process and
    compares with the in-memory functions."""
    inputs, expected = {}, {}
    for sig_name, fn in signatures.items():
        x = example_inputs(fn, num_classes)
        out = fn(*x.values())  # positional: the Python names may differ from the served ones
        for k, v in x.items():
            inputs[f"{sig_name}/{k}"] = v
        for k, v in out.items():
            expected[f"{sig_name}/{k}"] = np.asarray(v)
    io_path = path + ".io.npz"
    np.savez(io_path, **{f"in:{k}": v for k, v in inputs.items()}, **{f"out:{k}": v for k, v in expected.items()})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "export.verify", path, io_path],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    finally:
        os.remove(io_path)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"the SavedModel at {path} failed its check in a fresh process: {tail[0]}")
