"""python -m export.verify SAVED_MODEL_DIR IO.npz [SAVED_MODEL_DIR IO.npz ...]

Loads a SavedModel the way a server does (TensorFlow only: this module never
imports zoo or keras), calls each signature on the inputs stored in IO.npz
("in:<signature>/<input>") and compares with the expected outputs
("out:<signature>/<output>"), then replays the TF Serving warmup requests in
assets.extra/ as a server does when it loads the version. Exits non-zero on any
difference or failure."""

import os
import sys

import numpy as np
import tensorflow as tf


def main(path, io_path):
    assert "zoo" not in sys.modules
    stored = np.load(io_path)
    loaded = tf.saved_model.load(path)
    names = sorted({k.split(":", 1)[1].split("/")[0] for k in stored.files})
    missing = [n for n in [*names, "serving_default", "serve"] if n not in loaded.signatures]
    if missing:
        raise SystemExit(f"signatures missing: {missing}")
    for name in names:
        fn = loaded.signatures[name]
        inputs = {k.split("/", 1)[1]: tf.constant(stored[k]) for k in stored.files if k.startswith(f"in:{name}/")}
        outputs = fn(**inputs)
        for key in stored.files:
            if not key.startswith(f"out:{name}/"):
                continue
            out_name = key.split("/", 1)[1]
            got = outputs[out_name].numpy()
            if stored[key].dtype.kind == "S":  # encoded images (PNG): compare their pixels
                got, want = (np.stack([tf.io.decode_png(b).numpy() for b in bs]).astype(int) if len(bs) else
                             np.zeros([0]) for bs in (got, stored[key]))
                if got.shape != want.shape or np.abs(got - want).max(initial=0) > 1:
                    raise SystemExit(f"{name}/{out_name} decodes to other images than the in-memory model's")
                continue
            if not np.allclose(got, stored[key], atol=1e-4, rtol=1e-4):
                raise SystemExit(f"{name}/{out_name} differs from the in-memory model by {np.abs(got - stored[key]).max()}")
    warmed = replay_warmup(path, loaded)
    if sorted(warmed) != names:
        raise SystemExit(f"the warmup requests cover {sorted(warmed)}, not every signature {names}")
    print(f"verified {len(names)} signatures of {path}")


def replay_warmup(path, loaded):
    """Calls each signature of the warmup file's requests; returns their names."""
    from tensorflow_serving.apis import prediction_log_pb2

    warmed = []
    for record in tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        loaded.signatures[request.model_spec.signature_name](**inputs)
        warmed.append(request.model_spec.signature_name)
    return warmed


if __name__ == "__main__":
    pairs = sys.argv[1:]
    if not pairs or len(pairs) % 2:
        raise SystemExit("usage: python -m export.verify SAVED_MODEL_DIR IO.npz [SAVED_MODEL_DIR IO.npz ...]")
    for i in range(0, len(pairs), 2):
        main(pairs[i], pairs[i + 1])
