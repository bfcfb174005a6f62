"""train.run and export.run as a user runs them, in subprocesses."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import fork_server, run_module

BASE = ["--dataset=digits", "--batch_size=32", "--steps_per_epoch=4", "--verbose=0"]


def last_line(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    """A CVAE trained for 2 epochs and exported: the workdir and the export base."""
    root = tmp_path_factory.mktemp("cvae")
    workdir, base = str(root / "work"), str(root / "serving")
    proc = run_module("train.run", "--model=cvae", f"--workdir={workdir}", f"--export_base={base}",
                      "--epochs=2", "--latent_dim=4", "--jit_compile=auto", *BASE)  # auto: a user's default
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, base


def test_train_writes_the_workdir(cvae_run):
    workdir, _ = cvae_run
    for name in ("config.json", "history.csv", "model.keras", "checkpoints", "tensorboard",
                 "samples/epoch_0001.png", "samples/epoch_0002.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"] == "cvae" and config["model_options"]["latent_dim"] == 4
    assert config["image_shape"] == [8, 8, 1]


def test_rerun_resumes_from_the_last_checkpoint(cvae_run, train_run):
    workdir, _ = cvae_run
    proc = train_run("--model=cvae", f"--workdir={workdir}", "--epochs=3", *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"resumed from \S+ckpt-8 at epoch 2", proc.stderr), proc.stderr[-2000:]
    epochs = [row["epoch"] for row in csv.DictReader(open(os.path.join(workdir, "history.csv")))]
    assert epochs == ["0", "1", "2"]  # epoch 3 continued the count, nothing was redone
    assert os.path.exists(os.path.join(workdir, "samples", "epoch_0003.png"))


def test_workdir_of_another_model_is_refused(cvae_run, train_run):
    workdir, _ = cvae_run
    proc = train_run("--model=vae", f"--workdir={workdir}", *BASE)
    assert proc.returncode != 0
    assert "holds a cvae run" in last_line(proc)


BAD_COMMAND_LINES = [
    (["--model=nosuch"], r"unknown model 'nosuch'; valid models: .*vae"),
    (["--dataset=nosuch"], r"unknown dataset 'nosuch'; offline sets: mnist5k, digits"),
    (["--no_such_option=1"], r"valid options: .*--batch_size"),
    (["--model=ae", "--likelihood=gaussian"], r"--likelihood is not an option of model ae; its options: "),
    (["--model=vae", "--likelihood=poisson"], r"choose one of: bernoulli, continuous_bernoulli, gaussian"),
    (["--model=dcgan", "--loss=squared_hinge"],
     r"loss='squared_hinge' is not valid; choose one of: non_saturating, minimax, least_squares, "
     r"wasserstein_gp, hinge"),
    (["--strategy=nosuch"], r"strategy"),
    (["--lr_decay=step"], r"--lr_decay=step: value should be one of <none\|linear\|cosine>"),
]


@pytest.mark.parametrize("args, message", BAD_COMMAND_LINES, ids=[" ".join(a) for a, _ in BAD_COMMAND_LINES])
def test_bad_input_is_a_one_line_error(train_run, tmp_path, args, message):
    proc = train_run(f"--workdir={tmp_path / 'w'}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(message, last_line(proc)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_bad_input_is_one_line_from_the_command_itself(tmp_path):
    """The same answer from `python -m train.run` as a user runs it (absl's app.run around main)."""
    proc = run_module("train.run", f"--workdir={tmp_path / 'w'}", "--model=nosuch", timeout=120)
    assert proc.returncode == 2
    assert re.search(BAD_COMMAND_LINES[0][1], last_line(proc)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_export_layout_and_signatures(cvae_run):
    _, base = cvae_run
    assert os.listdir(os.path.join(base, "cvae")) == ["1"]  # no temporary leftovers
    version = os.path.join(base, "cvae", "1")
    assert os.path.exists(os.path.join(version, "saved_model.pb"))
    assert os.path.isdir(os.path.join(version, "variables"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")  # ships with TensorFlow
    proc = subprocess.run([cli, "show", "--dir", version, "--all"],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for sig in ("serving_default", "generate", "encode", "decode", "reconstruct"):
        assert f"signature_def['{sig}']" in proc.stdout
    # every input and output has a None (-1) batch dimension
    shapes = re.findall(r"shape: \(([^)]*)\)", proc.stdout)
    assert shapes and all(s.split(",")[0].strip() == "-1" for s in shapes), shapes


FRESH = r"""
import sys, json, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
out = {}
z = tf.random.normal([3, 4]); x = tf.random.uniform([3, 8, 8, 1]); y = tf.constant([1, 2, 3])
out["generate"] = m.signatures["generate"](z=z, labels=y)["images"].shape.as_list()
out["serving_default"] = m.signatures["serving_default"](z=z, labels=y)["images"].shape.as_list()
enc = m.signatures["encode"](images=x, labels=y)
out["encode"] = [enc["z"].shape.as_list(), enc["z_stddev"].shape.as_list()]
img = m.signatures["decode"](z=z, labels=y)["images"]
out["decode"] = img.shape.as_list(); out["range"] = [float(tf.reduce_min(img)), float(tf.reduce_max(img))]
out["reconstruct"] = m.signatures["reconstruct"](images=x, labels=y)["images"].shape.as_list()
bad = {
    "wrong latent size": lambda: m.signatures["generate"](z=tf.zeros([2, 5]), labels=tf.constant([1, 2])),
    "float labels": lambda: m.signatures["generate"](z=tf.zeros([2, 4]), labels=tf.constant([1.0, 2.0])),
    "int z": lambda: m.signatures["generate"](z=tf.zeros([2, 4], tf.int32), labels=tf.constant([1, 2])),
    "wrong image shape": lambda: m.signatures["encode"](images=tf.zeros([2, 28, 28, 1]), labels=tf.constant([1, 2])),
}
out["bad"] = {}
for name, call in bad.items():
    try:
        call()
        out["bad"][name] = "accepted"
    except (TypeError, ValueError, tf.errors.InvalidArgumentError):
        out["bad"][name] = "rejected"
out["zoo_imported"] = "zoo" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def served(cvae_run, tmp_path_factory):
    """What the cvae export answers in a process of its own without the zoo (FRESH; a child of
    the fork server, TensorFlow, Keras and TFP loaded: export.verify is the real-interpreter check)."""
    _, base = cvae_run
    folder = tmp_path_factory.mktemp("served")
    script = folder / "serve.py"
    script.write_text(FRESH)
    proc = fork_server()([script, os.path.join(base, "cvae", "1")], cwd=folder, kind="script")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_serves_in_a_fresh_process_without_zoo(served):
    out = served
    assert out["generate"] == out["serving_default"] == out["decode"] == out["reconstruct"] == [3, 8, 8, 1]
    assert out["encode"] == [[3, 4], [3, 4]]
    assert 0.0 <= out["range"][0] <= out["range"][1] <= 1.0
    assert out["zoo_imported"] is False


def test_export_run_adds_a_version_and_refuses_an_existing_one(cvae_run):
    workdir, base = cvae_run
    proc = run_module("export.run", f"--workdir={workdir}", f"--export_base={base}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(os.path.join(base, "cvae"))) == ["1", "2"]
    before = os.path.getmtime(os.path.join(base, "cvae", "1", "saved_model.pb"))
    proc = run_module("export.run", f"--workdir={workdir}", f"--export_base={base}", "--version=1")
    assert proc.returncode != 0 and "already exists" in last_line(proc)
    assert os.path.getmtime(os.path.join(base, "cvae", "1", "saved_model.pb")) == before


def test_export_of_an_untrained_workdir_is_refused(tmp_path):
    proc = run_module("export.run", f"--workdir={tmp_path}", f"--export_base={tmp_path / 'b'}")
    assert proc.returncode != 0 and "run train.run first" in last_line(proc)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(train_run, tmp_path):
    workdir = tmp_path / "w"
    proc = train_run("--model=vae", f"--workdir={workdir}", "--epochs=2", "--learning_rate=1e12", *BASE)
    assert proc.returncode != 0
    line = last_line(proc)
    assert re.search(r"error: \w+ became (nan|inf) in epoch 1 \(step \d+\)", line), line
    assert not os.path.exists(workdir / "checkpoints" / "checkpoint")  # the bad state was not saved
    # with a sane learning rate the same workdir trains (nothing had been saved)
    proc = train_run("--model=vae", f"--workdir={workdir}", "--epochs=1", *BASE)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_nan_guard_does_not_overwrite_the_last_good_checkpoint(tmp_path):
    import tensorflow as tf

    import zoo
    from train import callbacks

    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp")
    model.compile(**model.compile_defaults())
    epoch, step = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, epoch=epoch), str(tmp_path), 3)
    guard = callbacks.Checkpoint(manager, epoch, step, steps_per_epoch=1)
    guard.set_model(model)
    guard.on_train_batch_end(0)
    guard.on_epoch_end(0, {"loss": 1.0})
    good = manager.latest_checkpoint
    guard.on_train_batch_end(0)
    with pytest.raises(callbacks.NonFiniteLoss, match=r"loss became nan in epoch 2 .*ckpt-1 is kept"):
        guard.on_epoch_end(1, {"loss": float("nan")})
    assert manager.latest_checkpoint == good and int(epoch.numpy()) == 1 and model.stop_training


def test_a_corrupt_checkpoint_is_a_clear_error(cvae_run, train_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(cvae_run[0], workdir)
    indexes = list((workdir / "checkpoints").glob("ckpt-*.index"))
    for index in indexes:
        index.write_bytes(b"garbage")
    proc = train_run("--model=cvae", f"--workdir={workdir}", "--epochs=9", *BASE)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot restore" in last_line(proc) and "new --workdir" in last_line(proc)
    assert indexes and all(i.read_bytes() == b"garbage" for i in indexes)  # left for the user to inspect


def test_saved_model_cli_runs_generate(cvae_run):
    _, base = cvae_run
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run(
        [cli, "run", "--dir", os.path.join(base, "cvae", "1"), "--tag_set", "serve",
         "--signature_def", "generate", "--input_exprs",
         "z=[[0.0, 0.0, 0.0, 0.0], [0.5, -0.5, 1.0, 2.0]];labels=[1, 2]"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key images" in proc.stdout
    values = np.array([float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?", proc.stdout)])
    assert values.size >= 2 * 64 and values.min() >= 0.0 and values.max() <= 1.0


def test_exported_signatures_reject_wrong_shapes_and_dtypes(served):
    assert served["bad"] == dict.fromkeys(["wrong latent size", "float labels", "int z", "wrong image shape"],
                                          "rejected")


def test_evaluate_prints_one_json_line(cvae_run, tmp_path):
    workdir, _ = cvae_run
    proc = run_module("train.evaluate", f"--workdir={workdir}", f"--cache_dir={tmp_path}", "--num_samples=100")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("fcd", "fcd_reference", "precision", "recall", "class_entropy", "conditional_accuracy",
                "linear_probe_accuracy", "reconstruction_mse", "elbo_conditional_unnormalised",
                "iwae_conditional_unnormalised", "train_distance_ratio"):
        assert np.isfinite(result[key]), key
    # a cvae with the Bernoulli on grey levels: log p(x | y)'s bounds, and not log-likelihoods
    assert not {"elbo", "iwae", "iwae_conditional", "nll_nats"} & set(result) and result["bound_kind"] == "unnormalised"
    assert result["classifier_test_accuracy"] > 0.8
    assert result["iwae_conditional_unnormalised"] >= result["elbo_conditional_unnormalised"] - 0.5
    assert json.load(open(os.path.join(workdir, "eval.json"))) == result
    assert 0 <= result["coverage"] <= 1 and result["density"] >= 0
    # The command line is the same for any flag: the two variants below run in this
    # process (evaluate_workdir, what the command calls), sparing two TensorFlow start-ups.
    from train import evaluate

    # another latent sampler: a Gaussian fitted to the training codes (train.run fitted it)
    fitted = json.loads(json.dumps(evaluate.evaluate_workdir(workdir, str(tmp_path), 100, sampler="gaussian")))
    assert fitted["sampler"] == "gaussian" and fitted["fcd"] != result["fcd"]
    assert json.load(open(os.path.join(workdir, "eval-gaussian.json"))) == fitted
    # the gmm sampler refitted with other components and seed, the model otherwise as trained
    refit = json.loads(json.dumps(evaluate.evaluate_workdir(workdir, str(tmp_path), 100, sampler_components=3,
                                                            sampler_seed=1)))
    assert (refit["sampler_components"], refit["sampler_seed"]) == (3, 1) and refit["fcd"] != result["fcd"]
    assert refit["linear_probe_accuracy"] == result["linear_probe_accuracy"]  # the same encoder
    assert json.load(open(os.path.join(workdir, "eval-gmm3-seed1.json"))) == refit


def test_a_resumed_run_keeps_its_precision_unless_the_flag_is_given():
    from types import SimpleNamespace

    from train import run

    unset, given = SimpleNamespace(present=False, value="auto"), SimpleNamespace(present=True, value="bf16")
    assert run.resolve_precision({"dtype_policy": "float32"}, unset) == "off"
    assert run.resolve_precision({"dtype_policy": "mixed_bfloat16"}, unset) == "bf16"
    assert run.resolve_precision({"dtype_policy": "float32"}, given) == "bf16"
    assert run.resolve_precision({}, unset) == "auto"  # a new run: the flag's default
