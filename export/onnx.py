"""ONNX copies of an exported version (needs the `onnx` extra: tf2onnx, onnxruntime):
python -m export.onnx --export_dir=B/<model>/<version> [--signatures=generate,...] [--output_dir=D] [--opset=17]

Converts each signature of the SavedModel with tf2onnx, runs the result in ONNX
Runtime on example inputs and keeps it only if it matches the SavedModel
(within --atol): D/<signature>.onnx, default D = <export_dir>.onnx (a sibling
TF Serving ignores, as its name is not a version number). Prints one line per
signature: converted, or why not. ONNX has no assertion op, so the copies do
not carry the SavedModel's input checks; and it has no inverse normal CDF or
stateless random ops, so `generate` of a model whose sampler is a fitted one
(gmm, gaussian), `sample` and `sample_png` stay SavedModel-only."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train import cli  # noqa: E402  (no zoo import: the conversion must not need it)

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program, so that
    other programs (and tests) can import this module."""
    flags.DEFINE_string("export_dir", None, "a version directory written by export.run or train.run")
    flags.DEFINE_string("output_dir", None, "where the .onnx files go (default: <export_dir>.onnx)")
    flags.DEFINE_integer("opset", 17, "ONNX opset")
    flags.DEFINE_float("atol", 1e-5, "largest difference from the SavedModel a converted signature may have")
    flags.DEFINE_list("signatures", None, "signatures to convert (default: all)")

SKIP = ("serving_default", "serve")  # aliases of the first signature


def example_feed(signature, n=3, seed=0):
    """A small batch for every input of a loaded signature: images in [0, 1],
    z ~ N(0, I), labels 0 or 1, num_samples n, seed 0."""
    rng = np.random.RandomState(seed)
    feed = {}
    for name, spec in signature.structured_input_signature[1].items():
        if name in ("num_samples", "seed"):
            feed[name] = np.int32(n if name == "num_samples" else 0)
        elif spec.dtype == tf.int32:
            feed[name] = rng.randint(0, 2, size=[n, *spec.shape[1:]]).astype(np.int32)
        elif name == "images":
            feed[name] = rng.rand(n, *spec.shape[1:]).astype(np.float32)
        else:
            feed[name] = rng.randn(n, *spec.shape[1:]).astype(np.float32)
    return feed


def convert_signature(export_dir, name, path, opset=17):
    """tf2onnx's conversion of one signature to `path`; returns None or why it failed."""
    proc = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", export_dir, "--tag", "serve",
         "--signature_def", name, "--opset", str(opset), "--output", path],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    unsupported = [line.split(" - ERROR - ")[-1] for line in proc.stderr.splitlines() if "Unsupported ops" in line]
    if unsupported:
        return unsupported[0].strip()
    if proc.returncode != 0 or not os.path.exists(path):  # (logged rewriter errors alone are not fatal)
        return ([line for line in proc.stderr.splitlines() if "ERROR" in line][-1:] or ["no output"])[0].strip()
    return None


def check_signature(path, signature, atol):
    """Runs the .onnx at `path` in ONNX Runtime on example_feed and compares with
    the SavedModel's `signature`; returns None or the difference."""
    import onnxruntime

    feed = example_feed(signature)
    expected = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in feed.items()}).items()}
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for k, want in expected.items():
        if k not in got or got[k].shape != want.shape:
            return f"output {k} missing or of another shape"
        diff = float(np.abs(got[k].astype(np.float64) - want).max(initial=0.0))
        if diff > atol:
            return f"output {k} differs from the SavedModel by {diff:.2g} (> {atol})"
    return None


def convert(export_dir, output_dir=None, opset=17, atol=1e-5, signatures=None):
    """{signature: None (converted and checked) or the reason it was not}; the
    converted ones are in output_dir/<signature>.onnx. signatures: names to
    convert (default: all)."""
    output_dir = output_dir or export_dir.rstrip("/") + ".onnx"
    os.makedirs(output_dir, exist_ok=True)
    loaded = tf.saved_model.load(export_dir)
    names = sorted(set(loaded.signatures) - set(SKIP))
    unknown = sorted(set(signatures or []) - set(names))
    if unknown:
        raise ValueError(f"{export_dir} has no signature {', '.join(unknown)}; it has {', '.join(names)}")
    results = {}
    for name in [n for n in names if signatures is None or n in signatures]:
        path = os.path.join(output_dir, f"{name}.onnx")
        reason = convert_signature(export_dir, name, path, opset)
        if reason is None:
            try:
                reason = check_signature(path, loaded.signatures[name], atol)
            except Exception as e:  # ONNX Runtime refusing the model
                reason = f"ONNX Runtime cannot run it: {str(e).splitlines()[0][:200]}"
        if reason is not None and os.path.exists(path):
            os.remove(path)
        results[name] = reason
    return results


def main(argv):
    # (not a required flag: its message is this one line)
    if not FLAGS.export_dir or not os.path.exists(os.path.join(FLAGS.export_dir, "saved_model.pb")):
        cli.fail(f"no SavedModel in {FLAGS.export_dir}; pass a version directory such as B/vae/1")
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        cli.fail('ONNX conversion needs tf2onnx and onnxruntime: pip install -e ".[onnx]"')
    output_dir = FLAGS.output_dir or FLAGS.export_dir.rstrip("/") + ".onnx"
    try:
        results = convert(FLAGS.export_dir, output_dir, FLAGS.opset, FLAGS.atol, FLAGS.signatures)
    except ValueError as e:
        cli.fail(e)
    assert "zoo" not in sys.modules  # converts and checks as a serving host would, without the zoo
    for name, reason in results.items():
        print(f"{name}: " + (f"converted, {os.path.join(output_dir, name + '.onnx')}" if reason is None
                              else f"not converted ({reason})"))
    if all(reason is not None for reason in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
