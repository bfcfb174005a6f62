"""Run by conftest's run_module, run_mirrored_check and ForkServer: one process
per test worker that has imported TensorFlow, Keras and TensorFlow Probability
(and nothing of the zoo) and forks a child for each `python -m MODULE ARGV`,
`python SCRIPT ARGV` or `python -c CODE ARGV` it is asked for. The child
starts where a new interpreter would be after those imports (about 7 s of CPU
here, most of a short command's cost): its own cwd, environment, sys.argv and
sys.path[0] (the cwd for -m, the script's folder for a script, '' for -c),
stdin from /dev/null, stdout and stderr to the files named, then runpy; an
exception or SystemExit ends the child as it ends an interpreter (traceback
through sys.excepthook, atexit handlers, flushed streams, the exit code) but
for the interpreter's finalisation, which takes 2 s with TensorFlow loaded:
os._exit instead. TensorFlow has run no op in this process, so none of its
runtime, threads or devices is forked (the one other thread, jemalloc's from
pyarrow's library, has fork handlers; checked below). A child has these
modules loaded where a new interpreter running the same command might not (no
command of the zoo but export.onnx avoids them): a script that asserts what it
does not import can only check the zoo here (export.verify, in a real
interpreter, is the check of a SavedModel without them). Variables read only
at start-up or import (PYTHONPATH, PYTHONHASHSEED, TF_CPP_MIN_LOG_LEVEL,
TF_ENABLE_ONEDNN_OPTS, KERAS_BACKEND) are this process's, not a request's:
every child has the same string hash seed.

Reads one JSON request per line and answers each with one line:
- {"module", "script" or "code", "argv", "cwd", "env", "stdout", "stderr",
  "timeout"}: runs the command to its end; {"code": exit code} or, past the
  timeout (the child killed), {"timeout": true}. "code" is `python -c CODE`;
  "stderr": null sends stderr to stdout's file; "new_session": true starts a
  session (a process group) as Popen's start_new_session; "file_size_limit":
  n makes writes past n bytes fail with EFBIG (SIGXFSZ ignored), as on a full
  disk (the stdout and stderr files too).
- the same with "detach": true: starts it; {"pid": pid} at once. The caller
  signals the pid itself; this process reaps it (a child of this one).
- {"wait": pid, "timeout"}: {"code": exit code} once the started child has
  ended, or {"timeout": true} if it still runs after the timeout (0: a poll).
Children started and not waited for are killed when stdin closes."""

import atexit
import gc
import json
import os
import resource
import runpy
import signal
import sys
import tempfile
import threading
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402,F401
import tensorflow  # noqa: E402,F401
import tensorflow_probability  # noqa: E402,F401  (the zoo's; with tf_keras and tensorboard: 1.3 s more each)

from tensorflow.python.eager import context  # noqa: E402

# what makes forking safe: no runtime started, no thread of Python's
assert not context.context()._context_handle and threading.active_count() == 1, "fork_server.py: TF started"
gc.freeze()  # the imports' objects: no collection in a child touches (and copies) their pages

BASE_PATH = sys.path[1:]  # without this file's folder


def child(request):
    """Runs the request in this (forked) process; raises SystemExit or another
    exception (finish() ends the process)."""
    if request.get("new_session"):  # as Popen's start_new_session: the caller can kill its process group
        os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):  # first: errors below go to the files
        if fd == 2 and path is None:  # as Popen's stderr=STDOUT
            os.dup2(1, 2)
            continue
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    if request.get("file_size_limit"):  # writes past it fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_size_limit"],) * 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # line-buffered, as python's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # read from TMPDIR again on first use, as in a new interpreter
    if "module" in request:
        sys.argv = ["-m", *request["argv"]]  # runpy sets argv[0] to the module's file
        sys.path[:] = [request["cwd"], *BASE_PATH]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    elif "code" in request:
        sys.argv = ["-c", *request["argv"]]
        sys.path[:] = ["", *BASE_PATH]
        main_module = sys.modules["__main__"] = types.ModuleType("__main__")  # as python -c has
        exec(compile(request["code"], "<string>", "exec"), main_module.__dict__)
    else:
        sys.argv = [request["script"], *request["argv"]]
        sys.path[:] = [os.path.dirname(os.path.abspath(request["script"])), *BASE_PATH]
        runpy.run_path(request["script"], run_name="__main__")
    sys.exit(0)


def finish(run):
    """Calls run() and ends the process with its exit code, as an interpreter would."""
    code = 1
    try:
        run()
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (reported on the command's stderr, as an interpreter does)
        sys.excepthook(*sys.exc_info())
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


started = {}  # detached children not yet reaped: pid -> whether it leads a session


def start(request):
    pid = os.fork()
    if pid == 0:
        finish(lambda: child(request))
    return pid


def wait(pid, timeout):
    """The exit code of child `pid`, or None if it still runs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            started.pop(pid, None)
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def serve(request):
    if "wait" in request:
        code = wait(request["wait"], request["timeout"])
        return {"timeout": True} if code is None else {"code": code}
    pid = start(request)
    if request.get("detach"):
        started[pid] = bool(request.get("new_session"))
        return {"pid": pid}
    code = wait(pid, request.get("timeout", 600))
    if code is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"timeout": True}
    return {"code": code}


def main():
    protocol = sys.stdout
    try:
        for line in sys.stdin:
            protocol.write(json.dumps(serve(json.loads(line))) + "\n")
            protocol.flush()
    finally:
        for pid, session in started.items():  # a test that failed before waiting for its process
            (os.killpg if session else os.kill)(pid, signal.SIGKILL)  # a session: what it started too
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
