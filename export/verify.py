"""python -m export.verify SAVED_MODEL_DIR IO.npz

Loads a SavedModel the way a server does (TensorFlow only: this module never
imports zoo or keras), calls each signature on the inputs stored in IO.npz
("in:<signature>/<input>") and compares with the expected outputs
("out:<signature>/<output>"). Exits non-zero on any difference."""

import sys

import numpy as np
import tensorflow as tf


def main(path, io_path):
    assert "zoo" not in sys.modules
    stored = np.load(io_path)
    loaded = tf.saved_model.load(path)
    names = sorted({k.split(":", 1)[1].split("/")[0] for k in stored.files})
    missing = [n for n in [*names, "serving_default"] if n not in loaded.signatures]
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
            if not np.allclose(got, stored[key], atol=1e-4, rtol=1e-4):
                raise SystemExit(f"{name}/{out_name} differs from the in-memory model by {np.abs(got - stored[key]).max()}")
    print(f"verified {len(names)} signatures of {path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
