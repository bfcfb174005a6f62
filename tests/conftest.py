import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def without_xla(argv):
    """train.run's argv with --jit_compile=off unless it sets --jit_compile.
    Compiling a tiny run's step with XLA (auto's choice for most models on
    CPUs) costs 4-6 s of CPU and tests nothing new each time:
    test_precision.py compiles every model's step, and test_cli.py's cvae run
    keeps auto, as a user's command has it."""
    if any(str(a).startswith("--jit_compile") for a in argv):
        return list(argv)
    return [*argv, "--jit_compile=off"]


class LineServer:
    """A long-lived helper process (a script in tests/) that answers one JSON
    request per line of its stdin with one JSON line on its stdout; its
    stderr goes to `log_path`."""

    def __init__(self, script, log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, script)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def ask(self, request):
        """The answer to `request`; RuntimeError with the server's stderr if it died."""
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self.died()
            self.log.flush()
            raise RuntimeError(f"the {type(self).__name__} died: {open(self.log.name).read()[-3000:]}")
        return json.loads(line)

    def died(self):
        """Called when the server is found dead, before the error is raised."""

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


class ForkServer(LineServer):
    """`python -m MODULE ARGV`, `python SCRIPT ARGV` and `python -c CODE ARGV`,
    each run in a child forked from one process that has imported TensorFlow,
    Keras and TensorFlow Probability, not the zoo (tests/fork_server.py): a
    command's own process without its 7 s of imports. Calling the server
    runs a command to its end and returns a CompletedProcess as
    subprocess.run's would; start() returns a ForkedProcess while it runs,
    for tests that signal or kill it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fork-server-")
        super().__init__("fork_server.py", os.path.join(self.dir, "server-stderr.txt"))
        self.calls = 0

    def _request(self, args, env, cwd, kind, stderr_to_stdout, options):
        """The request for `python [-m|<script>|-c] args` and its cmd, as subprocess's would be."""
        self.calls += 1
        out, err = (os.path.join(self.dir, f"{self.calls}.{name}") for name in ("out", "err"))
        request = {kind: str(args[0]), "argv": [str(a) for a in args[1:]], "cwd": str(cwd or ROOT),
                   "env": {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, "stdout": out,
                   "stderr": None if stderr_to_stdout else err, **options}
        flag = {"module": ["-m"], "script": [], "code": ["-c"]}[kind]
        return request, [sys.executable, *flag, *map(str, args)]

    def __call__(self, args, timeout=600, env=None, cwd=None, kind="module", stderr_to_stdout=False, **options):
        """Runs the command to its end. options: fork_server.py's (new_session, file_size_limit)."""
        request, cmd = self._request(args, env, cwd, kind, stderr_to_stdout, options)
        answer = self.ask({**request, "timeout": timeout})
        out, err = _take(request)
        if answer.get("timeout"):
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err)
        return subprocess.CompletedProcess(cmd, answer["code"], out, err)

    def start(self, args, env=None, cwd=None, kind="module", stderr_to_stdout=False, **options):
        """The command started (not waited for) as a ForkedProcess."""
        request, cmd = self._request(args, env, cwd, kind, stderr_to_stdout, options)
        return ForkedProcess(self, self.ask({**request, "detach": True})["pid"], cmd, request)

    def died(self):
        global _fork_server
        _fork_server = None  # the next call starts a new one

    def close(self):
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _take(request):
    """(stdout, stderr) of a request's command, read from its files, which are
    then removed; stderr None if it went to stdout (Popen's stderr=STDOUT)."""
    texts = []
    for path in (request["stdout"], request["stderr"]):
        if path is None:
            texts.append(None)
            continue
        with open(path) as f:
            texts.append(f.read())
        os.remove(path)
    return texts


class ForkedProcess:
    """A command started by ForkServer.start, with subprocess.Popen's pid,
    returncode, poll, wait, send_signal, kill and communicate (its output
    is read from files once it has ended; discard() removes them unread).
    wait() without a timeout gives up after an hour, and the fork server
    serves nothing else while it waits."""

    def __init__(self, server, pid, args, request):
        self.server, self.pid, self.args, self.request = server, pid, args, request
        self.returncode = None

    def wait(self, timeout=None):
        if self.returncode is None:
            answer = self.server.ask({"wait": self.pid, "timeout": 3600 if timeout is None else timeout})
            if answer.get("timeout"):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = answer["code"]
        return self.returncode

    def poll(self):
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig):
        if self.returncode is None:  # until then the pid is this child's, even if it has exited (unreaped)
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        """(stdout, stderr) once the command has ended."""
        self.wait(timeout)
        return tuple(_take(self.request))

    def discard(self):
        """Waits for the command's end and removes its output unread."""
        self.wait()
        _take(self.request)


_fork_server = None


def fork_server():
    """This test worker's ForkServer, started on first use."""
    global _fork_server
    if _fork_server is None:
        _fork_server = ForkServer()
        atexit.register(_fork_server.close)
    return _fork_server


def run_module(*args, timeout=600, env=None, cwd=None):
    """Runs `python -m <args>` from the repository root (train.run without
    XLA unless args set --jit_compile: without_xla) in a child of the fork
    server; returns the CompletedProcess."""
    if args and args[0] == "train.run":
        args = ("train.run", *without_xla(args[1:]))
    return fork_server()(args, timeout=timeout, env=env, cwd=cwd)


def small_options(name, latent_dim=4, **extra):
    """Options of model `name` for tiny test shapes, the ones its Config has:
    latent_dim, and for a model that reads codes from z (InfoGAN) codes that
    fit in it (2 categories, 1 continuous code), for a model trained in
    stages (VQ-VAE) a first stage of one step, and for the semi-supervised
    AAE a style of latent_dim and no labelled examples (its own tests set
    them); then `extra`."""
    import zoo

    config = zoo.default_config(name)
    options = {"latent_dim": latent_dim, "style_dim": latent_dim, "categories": 2, "continuous": 1, "vq_steps": 1,
               "labelled": 0, **extra}
    return {k: v for k, v in options.items() if k in config}


@pytest.fixture(scope="session")
def digits():
    from train import data

    return data.load("digits")


@pytest.fixture(scope="session")
def digits64():
    """The first 64 of scikit-learn's 8x8 digits in [0, 1], with their labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:64] / 16.0).reshape(-1, 8, 8, 1).astype("float32"), y[:64].astype("int32")


def weights(net):
    """Copies of a network's trainable weights."""
    return [w.numpy().copy() for w in net.trainable_weights]


def unchanged(before, net):
    """Whether `net`'s trainable weights still equal `before`."""
    import numpy as np

    return all(np.array_equal(a, b) for a, b in zip(before, weights(net)))


class TrainRunServer(LineServer):
    """`python -m train.run ARGV` answered by one long-lived process
    (tests/train_run_server.py), for command lines that stop before training
    and short runs: calling it returns a CompletedProcess as run_module would
    (without XLA unless the args set --jit_compile: without_xla)."""

    def __init__(self, log_path):
        super().__init__("train_run_server.py", log_path)

    def __call__(self, *args, cwd=None):
        args = without_xla(args)
        answer = self.ask({"argv": [str(a) for a in args], "cwd": str(cwd or ROOT)})
        return subprocess.CompletedProcess(["train.run", *args], answer["code"], answer["stdout"], answer["stderr"])


@pytest.fixture(scope="session")
def train_run(tmp_path_factory):
    """A TrainRunServer for the session (of this test worker)."""
    server = TrainRunServer(str(tmp_path_factory.mktemp("server") / "stderr.txt"))
    yield server
    server.close()


def saved_signatures(version_dir):
    """The signature names in a SavedModel's saved_model.pb, read as serving reads them (the
    protocol buffer), without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return sorted(saved.meta_graphs[0].signature_def)


def run_mirrored_check(*cases):
    """{case: {"max_diff", "moved"}} from tests/mirrored_check.py, run in a
    process of its own, forked from one that has imported TensorFlow but not
    started its runtime: its 2 logical CPU devices must exist before that starts."""
    script = os.path.join(os.path.dirname(__file__), "mirrored_check.py")
    done = fork_server()([script, *cases], timeout=600, env={"CUDA_VISIBLE_DEVICES": ""}, kind="script")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Tests that start other processes (train.run and friends, the MirroredStrategy
# and multi-worker checks, exports verified in a fresh process, serving
# probes) are marked `slow`, found by the names their code, their fixtures'
# code and the test modules' helpers they call use, so that
# `pytest -m "not slow"` is a quick in-process loop.
SLOW_CALLS = frozenset({"run_module", "run_mirrored_check", "fork_server", "TrainRunServer", "subprocess", "Popen",
                        "export", "export_workdir"})
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _names(code):
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and lambdas
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def _calls_slow(fn, seen=None):
    """Whether fn's code, or a function of the tests that it calls, uses a SLOW_CALLS name."""
    code = getattr(fn, "__code__", None)
    seen = set() if seen is None else seen
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _names(code)
    if names & SLOW_CALLS:
        return True
    for name in names:  # helpers defined in the test modules
        helper = getattr(fn, "__globals__", {}).get(name)
        helper_code = getattr(helper, "__code__", None)
        if helper_code is not None and os.path.dirname(os.path.abspath(helper_code.co_filename)) == TESTS_DIR:
            if _calls_slow(helper, seen):
                return True
    return False


# Test files by their run time, longest first (`pytest --durations=0` summed per
# file). setup.cfg runs them with --dist loadfile --no-loadscope-reorder, so the
# two workers take files in this order: the long ones start first instead of
# leaving one worker alone at the end. Files not listed follow, in their order.
LONGEST_FIRST = (  # at b8d80f2, on a 2-core AVX512-BF16 VM: 1284 worker-seconds in all
    "test_own_images_models.py", "test_cli.py", "test_ema.py", "test_serving.py", "test_crash_loop.py",
    "test_cli_models.py", "test_gan.py", "test_faults_io.py", "test_precision.py", "test_explore.py",
    "test_contract.py", "test_report.py", "test_resume.py", "test_vae.py", "test_multi_worker.py",
    "test_export.py", "test_bigan.py", "test_aae.py", "test_samplers.py", "test_faults.py", "test_latent.py",
    "test_gan_levers.py", "test_own_images.py",
)


def _file_rank(item):
    name = os.path.basename(str(item.fspath))
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_file_rank)  # stable: a file's tests keep their order
    for item in items:
        fixture_defs = getattr(item, "_fixtureinfo", None)
        functions = [getattr(item, "function", None)]
        if fixture_defs is not None:
            functions += [d.func for defs in fixture_defs.name2fixturedefs.values() for d in defs]
        if any(_calls_slow(fn) for fn in functions):
            item.add_marker(pytest.mark.slow)


CLASSES = ["3", "7"]
PER_CLASS = 150


@pytest.fixture(scope="module")
def rgb():
    """mnist5k_rgb (test_own_images*.py)."""
    from train import data

    return data.load("mnist5k_rgb")


@pytest.fixture(scope="module")
def folder(rgb, tmp_path_factory):
    """A folder of 32x32 RGB PNGs in two class subfolders, 3/ and 7/, written from mnist5k_rgb."""
    from train import data

    path = str(tmp_path_factory.mktemp("own") / "digits_rgb")
    assert data.write_folder(rgb, path, classes=CLASSES, per_class=PER_CLASS) == 2 * PER_CLASS
    return path
