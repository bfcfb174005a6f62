"""SavedModels for TF Serving: <export_base>/<model_name>/<version>/.

A version is written to a hidden sibling directory, verified in a fresh Python
process that never imports zoo (as TF Serving has no Python), and only then
renamed into place, so a server polling the base path never sees half a model.

The exported graphs compute in float32 whatever precision trained the model
(`serving_precision`), so a serving host need not have the training machine's
bfloat16 units, and ONNX converters get one float type. Besides the model's
signatures a version has `serve` (the serving_default computation, the
endpoint Keras's TFSMLayer calls) and TF Serving warmup requests
(assets.extra/tf_serving_warmup_requests, one PredictionLog per signature).
"""

import contextlib
import ctypes
import glob
import os
import signal
import shutil
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from train.workdir import Lock, write_failure
from zoo import serving

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
CLASS_NAMES_FILE = os.path.join("assets.extra", "class_names.txt")  # line i names label i


class ExportError(RuntimeError):
    """An export that cannot be written or does not verify."""


def versions(model_dir):
    """The integer versions present in <export_base>/<model_name>/."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit())


def model_config_list(export_base):
    """TF Serving's model_config_list (text format) for every <export_base>/<name>/
    holding at least one integer version; names sorted."""
    base = os.path.abspath(export_base)
    names = sorted(d for d in os.listdir(base) if versions(os.path.join(base, d))) if os.path.isdir(base) else []
    if not names:
        raise ExportError(f"no exported model under {export_base}; export one first (--workdir)")
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{os.path.join(base, n)}"\n    model_platform: "tensorflow"\n  }}\n'
        for n in names
    )
    return "model_config_list {\n" + entries + "}\n"


def example_inputs(signature, bounds, n=3, seed=0):
    """A small batch for every input of a typed tf.function: images in [0, 1],
    z ~ N(0, I), each int index input in [0, its bound) (`bounds`: {input:
    bound}, zoo.serving.index_bounds(model); an unbounded one gets 0),
    num_samples n, seed `seed`."""
    rng = np.random.RandomState(seed)
    inputs = {}
    for spec in signature.input_signature:
        if spec.name in ("num_samples", "seed"):
            inputs[spec.name] = np.int32(n if spec.name == "num_samples" else seed)
            continue
        shape = [n, *spec.shape[1:]]
        if spec.dtype == tf.int32:
            inputs[spec.name] = rng.randint(0, max(bounds.get(spec.name, 1), 1), size=shape).astype(np.int32)
        elif spec.name == "images":
            inputs[spec.name] = rng.rand(*shape).astype(np.float32)
        else:
            inputs[spec.name] = rng.randn(*shape).astype(np.float32)
    return inputs


@contextlib.contextmanager
def _global_policy(policy):
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def in_precision(model, serving_precision="float32"):
    """`model`, or a copy of it built under the Keras policy of
    `serving_precision` ("float32" or "bfloat16": mixed bfloat16) with the same
    weights, where some layer computes in another dtype."""
    if serving_precision not in PRECISIONS:
        raise ExportError(
            f"serving_precision={serving_precision!r} is not valid; choose one of: {', '.join(PRECISIONS)}"
        )
    policy = PRECISIONS[serving_precision]
    compute = keras.dtype_policies.get(policy).compute_dtype
    if all(layer.compute_dtype == compute for layer in model._flatten_layers()):
        return model
    config = {**model.get_config(), "dtype": policy}
    with _global_policy(policy):
        copy = type(model).from_config(config)
    # in memory, not through a weights file: a full disk fails the export's own write, with its message
    copy.set_weights(model.get_weights())
    return copy


def export(model, export_base, name, version=None, verify=True, serving_precision="float32", class_names=None):
    """Writes `model`'s serving_signatures() (computing in `serving_precision`,
    see in_precision) as <export_base>/<name>/<version> (default: the next
    integer) and returns that path. `class_names` (the name of label i, for
    data labelled by name) go in assets.extra/class_names.txt, one per line,
    so a client can read a conditional model's `labels` as names."""
    if class_names is not None and len(class_names) != model.num_classes:
        raise ExportError(f"{len(class_names)} class names for a model of {model.num_classes} classes; "
                          f"pass one name per label")
    if class_names is not None and any("\n" in str(c) for c in class_names):
        raise ExportError("a class name holds a line break; class_names.txt has one name per line")
    model_dir = os.path.join(export_base, name)
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ExportError(f"--export_base={export_base} is a file, not a directory; pass a directory")
    if version is not None and not 0 <= int(version) < 2**63:  # TF Serving reads versions as non-negative int64
        raise ExportError(f"version must be an integer from 0 to 2**63 - 1, got {version}")
    check_finite(model)
    os.makedirs(model_dir, exist_ok=True)
    # One export at a time per model: the next waits, then takes the next version. The
    # lock file lives beside the model's directory, which holds versions only.
    with Lock(export_base, f".{name}.export.lock", what="export", wait=True):
        for stale in glob.glob(os.path.join(model_dir, ".tmp-*")):  # of exports that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)
        existing = versions(model_dir)
        version = int(version) if version is not None else (existing[-1] + 1 if existing else 1)
        final = os.path.join(model_dir, str(version))
        if os.path.exists(final):
            raise ExportError(
                f"{final} already exists; versions only grow: pick --version={existing[-1] + 1} or omit it")
        tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
        model = in_precision(model, serving_precision)
        signatures = model.serving_signatures()
        archive = keras.export.ExportArchive()
        archive.track(model)
        for sig_name, fn in signatures.items():  # the first is also serving_default
            archive.add_endpoint(sig_name, fn)
        archive.add_endpoint("serve", next(iter(signatures.values())))  # TFSMLayer's default endpoint
        try:
            try:
                archive.write_out(tmp, verbose=False)
                write_warmup(tmp, name, signatures, serving.index_bounds(model))
                if class_names is not None:
                    write_class_names(tmp, class_names)
            except (OSError, tf.errors.OpError) as e:  # disk full, a size limit, read-only
                raise ExportError(f"cannot write the SavedModel under {model_dir} ({write_failure(e)}); free disk space "
                                  f"or fix permissions, then rerun the export (nothing was published)") from None
            if verify:
                verify_in_fresh_process([(tmp, signatures, serving.index_bounds(model))])
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def check_finite(model):
    """ExportError naming the first weight that holds NaN or inf."""
    for weight in model.weights:
        if not np.all(np.isfinite(np.asarray(weight.numpy(), np.float32))):
            raise ExportError(
                f"the model's weight {weight.path} holds NaN or inf, so nothing it serves would be usable; "
                f"export a run that trained without a non-finite loss"
            )


def write_warmup(path, name, signatures, bounds):
    """assets.extra/tf_serving_warmup_requests: one PredictionLog per signature
    (a request of 1 row), which TF Serving replays when it loads the version,
    so that no client request pays for loading and tracing the graphs."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_FILE)) as writer:
        for sig_name, fn in signatures.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=sig_name)
            )
            for k, v in example_inputs(fn, bounds, n=1).items():
                request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_class_names(path, class_names):
    """assets.extra/class_names.txt: line i is the name of label i."""
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, CLASS_NAMES_FILE), "w", encoding="utf-8") as fh:
        fh.write("".join(f"{c}\n" for c in class_names))


def read_class_names(path):
    """The class names of the SavedModel at `path` (label i's is element i),
    or None when it was trained on data without named classes."""
    try:
        with open(os.path.join(path, CLASS_NAMES_FILE), encoding="utf-8") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return None


def _die_with_parent():
    """In the verify child (Linux): SIGKILL when the exporting process dies, so a
    killed export leaves no orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def verify_in_fresh_process(exports):
    """Calls every signature of each SavedModel in one fresh process, as a
    server loads it (export.verify: TensorFlow only), compares the answers with
    the in-memory functions and replays the warmup requests. exports: a list
    of (SavedModel path, {name: typed tf.function}, index bounds as
    zoo.serving.index_bounds gives them). Raises
    ExportError naming the first SavedModel that fails."""
    if not exports:
        raise ExportError("nothing to verify: pass at least one (path, signatures, index bounds)")
    args = []  # SavedModel path, its inputs and expected outputs (.io.npz), ...
    try:
        for path, signatures, bounds in exports:
            inputs, expected = {}, {}
            for sig_name, fn in signatures.items():
                x = example_inputs(fn, bounds)
                out = fn(*x.values())  # positional: the Python names may differ from the served ones
                for k, v in x.items():
                    inputs[f"{sig_name}/{k}"] = v
                for k, v in out.items():
                    v = np.asarray(v)
                    expected[f"{sig_name}/{k}"] = v.astype(bytes) if v.dtype == object else v  # npz: no pickles
            io_path = path + ".io.npz"
            np.savez(io_path, **{f"in:{k}": v for k, v in inputs.items()},
                     **{f"out:{k}": v for k, v in expected.items()})
            args += [path, io_path]
        proc = subprocess.run(
            [sys.executable, "-m", "export.verify", *args],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            preexec_fn=_die_with_parent,
        )
    finally:
        for io_path in args[1::2]:
            os.remove(io_path)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"the SavedModel at {first_unverified(proc.stdout, args[0::2])} failed its check in a "
                          f"fresh process: {tail[0]}")


def first_unverified(stdout, paths):
    """The first of `paths` that export.verify's output does not report verified."""
    done = {line.split(" of ", 1)[1] for line in stdout.splitlines() if line.startswith("verified ")}
    return next((p for p in paths if p not in done), paths[-1])
