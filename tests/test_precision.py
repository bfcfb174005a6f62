"""--mixed_precision and --jit_compile: what auto picks on each kind of device
(device details faked), float16 with dynamic loss scaling training every model
on the CPU, and every model's train step compiled with XLA on the CPU."""

import csv
import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import small_options
from train import compiler, precision

A100, H100, V100, T4 = ("A100", (8, 0)), ("H100", (9, 0)), ("V100", (7, 0)), ("T4", (7, 5))


@pytest.mark.parametrize("gpus, cpu_bf16, expected", [
    ([A100], False, "bf16"),
    ([A100, H100], False, "bf16"),
    ([T4], True, "fp16"),  # the GPUs decide, whatever the CPU
    ([A100, V100], True, "fp16"),  # the oldest GPU decides
    ([], True, "bf16"),
    ([], False, "off"),
])
def test_auto_decides_by_the_devices(gpus, cpu_bf16, expected):
    choice, reason = precision.decide("auto", gpus=gpus, cpu_bf16=cpu_bf16)
    assert choice == expected
    assert ("GPU" in reason) if gpus else ("CPU" in reason)
    for explicit in ("off", "bf16", "fp16"):
        assert precision.decide(explicit, gpus=gpus, cpu_bf16=cpu_bf16)[0] == explicit
    with pytest.raises(ValueError, match="choose one of: off, bf16, fp16, auto"):
        precision.decide("fp8")


def test_fp16_is_for_one_replica_and_xla_auto_too():
    """Loss scaling skips or applies a step from each replica's own gradients,
    and a compiled step skips the strategy's merge_call: with several replicas
    auto picks neither, and fp16 is refused in one line."""
    assert precision.decide("auto", gpus=[T4], cpu_bf16=False, replicas=2)[0] == "off"
    assert precision.decide("auto", gpus=[A100], cpu_bf16=False, replicas=2)[0] == "bf16"
    with pytest.raises(ValueError, match="fp16 trains on one replica only"):
        precision.decide("fp16", replicas=2)
    assert compiler.decide("auto", gpus=["GPU:0", "GPU:1"], replicas=2)[0] is False
    assert compiler.decide("on", gpus=[], replicas=2)[0] is True  # asked for


def test_auto_reads_the_gpus_details_and_the_cpu_flags(monkeypatch):
    """The lookups themselves, faked: tf's device list and details, /proc/cpuinfo."""
    gpus = [types.SimpleNamespace(name="/physical_device:GPU:0"), types.SimpleNamespace(name="/physical_device:GPU:1")]
    details = {"/physical_device:GPU:0": {"device_name": "Tesla T4", "compute_capability": (7, 5)},
               "/physical_device:GPU:1": {"device_name": "A100", "compute_capability": (8, 0)}}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda d: details[d.name])
    assert precision.gpu_capabilities() == [("Tesla T4", (7, 5)), ("A100", (8, 0))]
    choice, reason = precision.decide("auto")
    assert choice == "fp16" and "Tesla T4" in reason and "7.5" in reason
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.decide("auto") == ("bf16", "no GPU; this CPU has bfloat16 units")


@pytest.fixture
def float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)),
            tf.constant(rng.integers(0, 3, 16).astype(np.int32)))


def tiny(name):
    keras.utils.set_random_seed(0)
    return zoo.build(name, image_shape=(8, 8, 1), num_classes=3, **small_options(name))


@pytest.mark.parametrize("name", zoo.names())
def test_float16_trains_every_model_with_loss_scaling(name, float16):
    model = tiny(name)
    model.compile(**model.compile_defaults())
    optimizers = [getattr(model, n) for n in model.optimizer_names]
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers), optimizers
    before = [v.numpy().copy() for v in model.trainable_variables]
    for _ in range(2):
        logs = model.train_step(batch())
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    assert max(np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)) > 1e-5
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # float32 variables, float16 compute


@pytest.mark.parametrize("name", zoo.names())
def test_every_model_is_called_and_predicts_under_mixed_bfloat16(name):
    """Keras casts a call's float inputs to the bf16 compute dtype; the models
    read them as float32 wherever they need to, and answer float32 images."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny(name)
        images, labels = batch()
        z = np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype(np.float32)
        x = z if isinstance(model, zoo.GAN) else images[:5]  # the GANs' call generates, the others' reconstructs
        inputs = (x, labels[:5]) if model.conditional else x
        out = model(inputs)
        assert out.dtype == tf.float32 and out.shape == (5, 8, 8, 1)
        np.testing.assert_allclose(model.predict(inputs, verbose=0), out, atol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_an_overflowing_step_is_skipped_and_its_losses_stay_finite(float16):
    """A loss scale so large that the float16 gradients overflow: the optimizer
    skips the step (no weight moves) and halves the scale, as Keras's
    LossScaleOptimizer does; the tracked losses stay finite, so the NaN guard
    of train.run does not take a skipped step for divergence."""
    model = tiny("dcgan")
    model.compile(**{n: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**40)
                     for n in model.optimizer_names})
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_step(batch())
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))
    assert float(model.d_optimizer.dynamic_scale) == 2.0**39


def test_train_run_in_float16_with_xla_resumes_in_float16(train_run, tmp_path):
    workdir = tmp_path / "w"
    common = ["--model=vae", "--dataset=digits", "--net=mlp", "--latent_dim=2", "--batch_size=32",
              "--steps_per_epoch=2", "--verbose=0", f"--workdir={workdir}"]
    proc = train_run(*common, "--epochs=1", "--mixed_precision=fp16", "--jit_compile=on")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiled with XLA" in proc.stderr
    assert json.load(open(workdir / "config.json"))["dtype_policy"] == "mixed_float16"
    proc = train_run(*common, "--epochs=2", "--mixed_precision=off")  # other optimizers: refused in one line
    assert proc.returncode != 0 and "trained in mixed_float16" in proc.stderr.strip().splitlines()[-1]
    proc = train_run(*common, "--epochs=2")  # no flag: the run's own precision
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(workdir / "config.json"))["dtype_policy"] == "mixed_float16"
    rows = list(csv.DictReader(open(workdir / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"] and all(np.isfinite(float(r["loss"])) for r in rows)


def test_jit_auto_compiles_on_gpus_and_on_cpus_where_the_model_gains():
    assert compiler.decide("auto", gpus=["GPU:0"])[0] is True
    assert compiler.decide("auto", gpus=[])[0] is False
    assert compiler.decide("auto", gpus=[], pays_on_cpu=True)[0] is True
    assert compiler.decide("auto", gpus=[], replicas=2, pays_on_cpu=True)[0] is False
    assert compiler.decide("off", gpus=[], pays_on_cpu=True)[0] is False
    # the conv autoencoders and the adversarial models gain on CPUs (train.benchmark --xla_vs_plain),
    # the MLP autoencoders do not
    gains = {name for name in zoo.names() if zoo.get(name).xla_pays_on_cpu({})}
    assert gains == {"ae", "vae", "cvae", "aae", "ssaae", "gan", "cgan", "dcgan", "infogan", "bigan"}
    assert not zoo.get("vae").xla_pays_on_cpu({"net": "mlp"}) and zoo.get("dcgan").xla_pays_on_cpu({"net": "mlp"})
    assert compiler.decide("on", gpus=[])[0] is True and compiler.decide("off", gpus=["GPU:0"])[0] is False
    with pytest.raises(ValueError, match="choose one of: auto, on, off"):
        compiler.decide("yes")


def one_step_update(name, jit):
    """(the update of one SGD train step on 64 images as one vector, its tracked losses)."""
    keras.utils.set_random_seed(0)
    # (InfoGAN without continuous codes: their 1/2 (c - mu)^2 in the losses, c ~ N(0, 1),
    # varies by more than 1% from one draw of 64 codes to another)
    model = zoo.build(name, image_shape=(8, 8, 1), num_classes=3, **small_options(name, d_dropout=0.0, continuous=0))
    model.compile(**{k: keras.optimizers.SGD(0.1) for k in model.compile_defaults()}, jit_compile=jit)
    start = [v.numpy() for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    data = (rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32))
    logs = {k: v[-1] for k, v in model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), verbose=0).history.items()}
    return np.concatenate([(v.numpy() - s).ravel() for v, s in zip(model.trainable_variables, start)]), logs


@pytest.mark.parametrize("name", zoo.names())
def test_every_train_step_compiles_with_xla_and_makes_the_plain_update(name):
    """XLA draws other random numbers than the CPU kernels from the same
    stateless seeds, so a step that draws noise makes the plain step's update
    only in law: on 64 images its direction (cosine > 0.85) and size (within
    10%) and its losses (within 1%). The AE draws nothing: the same update."""
    plain, plain_logs = one_step_update(name, jit=False)
    jit, jit_logs = one_step_update(name, jit=True)
    assert np.linalg.norm(plain) > 1e-4 and np.all(np.isfinite(jit))
    if name == "ae":
        np.testing.assert_allclose(jit, plain, atol=1e-6)
    cosine = float(plain @ jit / np.linalg.norm(plain) / np.linalg.norm(jit))
    assert cosine > 0.85 and 0.9 < np.linalg.norm(jit) / np.linalg.norm(plain) < 1.1, (cosine, name)
    for key, value in plain_logs.items():
        assert jit_logs[key] == pytest.approx(value, rel=0.01, abs=1e-3), key


def test_an_in_process_run_leaves_the_global_dtype_policy_as_it_was(tmp_path):
    from train import run

    config = {"model": "ae", "dataset": "digits", "image_size": None, "seed": 0,
              "model_options": {"net": "mlp", "latent_dim": 2},
              "training": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-3}}
    assert keras.config.dtype_policy().name == "float32"
    model = run.train(str(tmp_path / "w"), config, steps_per_epoch=1, mixed_precision="bf16", verbose=0,
                      jit_compile="off")
    assert model.dtype_policy.name == "mixed_bfloat16"  # trained in bf16 ...
    assert keras.config.dtype_policy().name == "float32"  # ... and the script's next model is float32 again
