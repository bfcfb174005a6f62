"""Export a trained run for TF Serving:
python -m export.run --workdir=W --export_base=B [--version=N] [--serving_precision=float32]
                     [--model_config=PATH]

Writes B/<model>/<version>/ (saved_model.pb, variables/, assets.extra/) from
W/model.keras. --model_config=PATH (alone, or after an export) writes TF
Serving's model_config_list for every model under B, for
`tensorflow_model_server --model_config_file=PATH`."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402

import zoo  # noqa: E402,F401  (registers the model classes for load_model)
from export.saved_model import PRECISIONS, ExportError, export, model_config_list  # noqa: E402
from train.workdir import WorkdirError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras")
flags.DEFINE_string("export_base", None, "TF Serving base path", required=True)
flags.DEFINE_integer("version", None, "version number (default: the next one)")
flags.DEFINE_enum("serving_precision", "float32", list(PRECISIONS),
                  "precision the exported graphs compute in, whatever trained the model")
flags.DEFINE_string("model_config", None, "also write TF Serving's model_config_list for every model under "
                    "--export_base to this file")


def export_workdir(workdir, export_base, version=None, serving_precision="float32"):
    keras_path = os.path.join(workdir, "model.keras")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(keras_path) or not os.path.exists(config_path):
        raise ExportError(f"no trained model in {workdir} (model.keras or config.json missing); run train.run first")
    try:
        with open(config_path) as fh:
            name = json.load(fh)["model"]
        cls = zoo.get(name)
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable, not JSON, `[]`, an unknown model
        raise ExportError(f"{config_path} names no zoo model ({type(e).__name__}: {str(e)[:120]}); "
                          f"restore it from the run or retrain with train.run") from None
    try:
        model = keras.models.load_model(keras_path)
    except Exception as e:
        raise ExportError(f"cannot load {keras_path} ({type(e).__name__}: {e}); retrain with train.run") from None
    if type(model) is not cls:
        raise ExportError(f"{config_path} names model {name} but {keras_path} holds a {type(model).__name__}; "
                          f"the workdir is mixed up: retrain with train.run in a new --workdir")
    return export(model, export_base, name, version=version, serving_precision=serving_precision)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if FLAGS.workdir is None and FLAGS.model_config is None:
        print("error: pass --workdir=W (a train.run workdir) to export, or --model_config=PATH", file=sys.stderr)
        sys.exit(2)
    try:
        if FLAGS.workdir is not None:
            path = export_workdir(FLAGS.workdir, FLAGS.export_base, FLAGS.version, FLAGS.serving_precision)
            print(f"exported {path}")
        if FLAGS.model_config is not None:
            text = model_config_list(FLAGS.export_base)
            tmp = FLAGS.model_config + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, FLAGS.model_config)
            print(f"wrote {FLAGS.model_config}")
    except (ExportError, WorkdirError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # disk full, read-only: the version directory appears whole or not at all
        print(f"error: cannot write {e.filename or FLAGS.export_base} ({e.strerror or e}); free disk space or "
              f"fix permissions, then rerun the export", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
