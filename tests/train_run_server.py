"""Run by conftest's `train_run` fixture: one process that answers many
`python -m train.run ARGV` command lines, so that TensorFlow starts once per
test worker instead of once per command. Reads one JSON request per line,
{"argv": [...], "cwd": dir}, and answers each with one JSON line
{"code": exit code, "stdout": ..., "stderr": ...}: main() after absl's parser,
as app.run calls it (tests/test_cli.py runs the real command too). An
exception other than SystemExit is answered with code 1 and its traceback.

For command lines that stop before training (bad input, refused workdirs,
failed restores) and short runs of a few steps; every run builds its own model
and seeds its own RNGs, and the dtype policy is reset after each. What needs a
process of its own keeps one: kills and signals, resource limits, several
workers, the real command line (tests/test_cli.py, test_resume.py,
test_crash_loop.py, test_multi_worker.py)."""

import contextlib
import io
import json
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from absl import logging  # noqa: E402

from train import run  # noqa: E402


def answer(argv, cwd):
    run.FLAGS.unparse_flags()  # each command line starts from the defaults
    out, err, code = io.StringIO(), io.StringIO(), 0
    handler = logging.get_absl_handler().python_handler
    stream, handler.stream = handler.stream, err  # absl's warnings go where the command's stderr goes
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run.main(run.parse_flags(["train.run", *argv]))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:  # noqa: BLE001  (reported to the test, which fails on it)
                traceback.print_exc()
                code = 1
    finally:
        handler.stream = stream
        keras.mixed_precision.set_global_policy("float32")
        os.chdir(ROOT)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main():
    run.define_flags()
    logging.use_absl_handler()  # as app.run does: warnings such as "resumed from ..." go to the handler
    protocol = sys.stdout  # train.run's own prints are captured per request
    for line in sys.stdin:
        request = json.loads(line)
        protocol.write(json.dumps(answer(request["argv"], request.get("cwd") or ROOT)) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
