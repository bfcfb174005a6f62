"""Export a trained run for TF Serving:
python -m export.run --workdir=W --export_base=B [--version=N] [--serving_precision=float32]
                     [--model_config=PATH]

Writes B/<model>/<version>/ (saved_model.pb, variables/, assets.extra/) from
W/model.keras. --model_config=PATH (alone, or after an export) writes TF
Serving's model_config_list for every model under B, for
`tensorflow_model_server --model_config_file=PATH`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402


import zoo  # noqa: E402,F401  (registers the model classes for load_model)
from export.saved_model import PRECISIONS, ExportError, export, model_config_list  # noqa: E402
from train import cli  # noqa: E402
from train.workdir import WorkdirError, load_trained, write_text  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program, so that
    other programs (and tests) can import this module."""
    flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras")
    flags.DEFINE_string("export_base", None, "TF Serving base path", required=True)
    flags.DEFINE_integer("version", None, "version number (default: the next one)")
    flags.DEFINE_enum("serving_precision", "float32", list(PRECISIONS),
                      "precision the exported graphs compute in, whatever trained the model")
    flags.DEFINE_string("model_config", None, "also write TF Serving's model_config_list for every model under "
                        "--export_base to this file")


def export_workdir(workdir, export_base, version=None, serving_precision="float32"):
    """export() of the model trained in `workdir` (train.workdir.load_trained)."""
    try:
        model, config = load_trained(workdir)
    except WorkdirError as e:
        raise ExportError(str(e)) from None
    return export(model, export_base, config["model"], version=version, serving_precision=serving_precision,
                  class_names=config.get("class_names"))


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if FLAGS.workdir is None and FLAGS.model_config is None:
        cli.fail("pass --workdir=W (a train.run workdir) to export, or --model_config=PATH")
    try:
        if FLAGS.workdir is not None:
            path = export_workdir(FLAGS.workdir, FLAGS.export_base, FLAGS.version, FLAGS.serving_precision)
            print(f"exported {path}")
        if FLAGS.model_config is not None:
            text = model_config_list(FLAGS.export_base)
            write_text(FLAGS.model_config, text)
            print(f"wrote {FLAGS.model_config}")
    except (ExportError, WorkdirError) as e:
        cli.fail(e)
    except OSError as e:  # disk full, read-only: the version directory appears whole or not at all
        cli.fail(f"cannot write {e.filename or FLAGS.export_base} ({e.strerror or e}); free disk space or "
                 f"fix permissions, then rerun the export")


if __name__ == "__main__":
    define_flags()
    app.run(main)
