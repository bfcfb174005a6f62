"""Export a trained run for TF Serving:
python -m export.run --workdir=W --export_base=B [--version=N]

Writes B/<model>/<version>/ (saved_model.pb + variables/) from W/model.keras."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402

import zoo  # noqa: E402,F401  (registers the model classes for load_model)
from export.saved_model import ExportError, export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras", required=True)
flags.DEFINE_string("export_base", None, "TF Serving base path", required=True)
flags.DEFINE_integer("version", None, "version number (default: the next one)")


def export_workdir(workdir, export_base, version=None):
    keras_path = os.path.join(workdir, "model.keras")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(keras_path) or not os.path.exists(config_path):
        raise ExportError(f"no trained model in {workdir} (model.keras or config.json missing); run train.run first")
    with open(config_path) as fh:
        name = json.load(fh)["model"]
    try:
        model = keras.models.load_model(keras_path)
    except Exception as e:
        raise ExportError(f"cannot load {keras_path} ({type(e).__name__}: {e}); retrain with train.run") from None
    return export(model, export_base, name, version=version)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
        path = export_workdir(FLAGS.workdir, FLAGS.export_base, FLAGS.version)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"exported {path}")


if __name__ == "__main__":
    app.run(main)
