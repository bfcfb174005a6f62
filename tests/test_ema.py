"""zoo.ema, the moving average of the generating networks' weights (ema_decay):
the update formula, inference on the averages, training left alone, checkpoints,
.keras files, SavedModels and mixed precision. Tiny 8x8x1 shapes, few steps,
fixed seeds. (MirroredStrategy: the *_ema cases of tests/mirrored_check.py, run
by test_gan, test_bigan and test_aae.)"""

import contextlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from export import saved_model
from zoo import base, ema

SHAPE, CLASSES, BATCH = (8, 8, 1), 3, 8
DECAY = 0.9
# case -> (model name, config): every averaging model; dcgan's G has batch norm,
# whose moving statistics are averaged too.
CASES = {
    "gan": ("gan", dict(latent_dim=4, d_dropout=0.0)),
    "dcgan": ("dcgan", dict(latent_dim=4, d_dropout=0.0)),
    "cgan": ("cgan", dict(latent_dim=4, d_dropout=0.0)),
    "bigan": ("bigan", dict(latent_dim=4, d_dropout=0.0)),
    "aae": ("aae", dict(latent_dim=4)),
    "vae": ("vae", dict(latent_dim=4, net="mlp")),
    "cvae": ("cvae", dict(latent_dim=4, net="mlp", posterior="banded")),
}


def build(case, decay=DECAY, compile=True):
    name, config = CASES[case]
    keras.utils.set_random_seed(0)
    model = zoo.build(name, image_shape=SHAPE, num_classes=CLASSES, seed=1, ema_decay=decay, **config)
    if compile:
        model.compile(**{key: keras.optimizers.Adam(1e-3) for key in model.compile_defaults()})
    return model


def batches(steps, seed=0):
    """`steps` batches (images in [0, 1], labels)."""
    rng = np.random.default_rng(seed)
    images = rng.random((steps * BATCH, *SHAPE), dtype=np.float32)
    labels = rng.integers(0, CLASSES, steps * BATCH).astype(np.int32)
    return [(images[i * BATCH : (i + 1) * BATCH], labels[i * BATCH : (i + 1) * BATCH]) for i in range(steps)]


def train(model, data):
    for images, labels in data:
        model.train_on_batch(images, labels)


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def inputs(n=5, seed=3):
    z = tf.random.stateless_normal([n, 4], [seed, 0])
    images = tf.random.stateless_uniform([n, *SHAPE], [seed, 1])
    labels = tf.range(n, dtype=tf.int32) % CLASSES
    return z, images, labels


def outputs(model, fn=None):
    """{method: output} of every inference method that the average serves.
    fn(method) wraps each bound method (e.g. in a tf.function)."""
    fn = fn or (lambda method: method)
    z, images, labels = inputs()
    if isinstance(model, zoo.GAN):
        if model.conditional:
            return {"generate": fn(model.generate)(z, labels)}
        return {"generate": fn(model.generate)(z)}
    y = labels if model.conditional else None
    out = {
        "generate": fn(model.generate)(z, y),
        "decode": fn(model.decode)(z, y),
        "encode": fn(model.encode)(images, y),
        "reconstruct": fn(model.reconstruct)(images, y),
    }
    if model.can("likelihood"):  # the bounds evaluate reports are the served model's
        seed = tf.constant([1, 2])
        out["iwae"] = fn(lambda x, y: model.iwae_bound(x, y, k=3, seed=seed))(images, y)
        out["elbo"] = fn(lambda x, y: tf.add_n(model.elbo_terms(x, y, seed=seed)))(images, y)
    return out


def twin(model, case, averaged):
    """A model with ema_decay = 0 whose averaged networks hold `model`'s averages
    (averaged=True) or its raw weights (False): its inference methods run
    those networks directly, with no zoo.ema code in the way."""
    other = build(case, decay=0.0, compile=False)
    for name in model.ema_networks:
        pairs = model.ema_pairs(name)
        targets = ema.averaged_weights(getattr(other, name))
        assert len(targets) == len(pairs)
        for target, (w, w_ema) in zip(targets, pairs):
            target.assign(w_ema if averaged else w)
    return other


def assert_outputs_equal(got, expected, atol=1e-6):
    assert list(got) == list(expected)
    for key in got:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=atol, err_msg=key)


@contextlib.contextmanager
def policy(name):
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------------------
# the option


def test_a_gan_saved_before_its_average_was_the_default_loads_without_one():
    new = zoo.build("gan", image_shape=SHAPE)
    assert new.config.ema_decay == 0.999 and new.ema_pairs("generator")
    config = {k: v for k, v in new.get_config().items() if k != "ema_decay"}
    old = zoo.GAN.from_config(config)
    assert old.config.ema_decay == 0.0 and not [w for w in old.weights if "ema_" in w.path]


@pytest.mark.parametrize("case", list(CASES))
def test_off_adds_no_weights(case):
    name, _ = CASES[case]
    # on by default only where train.report measured that it helps
    assert zoo.default_config(name)["ema_decay"] == {"gan": 0.999, "cgan": 0.999, "aae": 0.995, "dcgan": 0.999,
                                                     "bigan": 0.999}.get(name, 0.0)
    off = build(case, decay=0.0)
    assert not [w.path for w in off.weights if "ema_" in w.path]
    assert all(off.ema_pairs(n) == [] for n in off.ema_networks)
    on = build(case)
    added = [w for w in on.weights if "ema_" in w.path]
    assert len(on.weights) == len(off.weights) + len(added) > len(off.weights)
    assert on.get_config()["ema_decay"] == DECAY


def test_decay_warms_up_to_d():
    model = build("gan", decay=0.999, compile=False)
    d = [float(model.ema_decay_at(t)) for t in (1, 10, 100, 8990, 9000, 20000)]
    np.testing.assert_allclose(d, [2 / 11, 11 / 20, 101 / 110, 8991 / 9000, 0.999, 0.999], rtol=1e-6)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_decay_out_of_range_is_an_error(decay):
    with pytest.raises(ValueError, match="ema_decay must be in"):
        build("gan", decay=decay)


def test_averaged_networks():
    assert build("gan").ema_networks == ("generator",)
    assert build("bigan").ema_networks == ("generator", "encoder")
    assert build("aae").ema_networks == ("encoder", "decoder")
    # dcgan: the batch norms' moving statistics are averaged with the trainable weights
    g = build("dcgan").generator
    averaged = [w for w, _ in build("dcgan").ema_pairs("generator")]
    assert len(averaged) == len(g.trainable_variables) + len(g.non_trainable_variables)
    assert any("moving_mean" in w.path for w in averaged) and any("moving_variance" in w.path for w in averaged)
    with pytest.raises(ValueError, match="for inference"):
        build("gan").averaged_call("generator", tf.zeros([2, 4]), training=True)


# ---------------------------------------------------------------------------
# the update


@pytest.mark.parametrize("case", list(CASES))
def test_average_starts_at_the_weights_and_follows_the_formula(case):
    """w_ema = w at construction; after step t (1, 2, ...) w_ema <- d_t w_ema +
    (1 - d_t) w, d_t = min(d, (1 + t) / (10 + t)), w the weights after that step."""
    model = build(case)
    pairs = [pair for name in model.ema_networks for pair in model.ema_pairs(name)]
    for w, w_ema in pairs:
        assert w_ema.dtype == w.dtype == "float32" and not w_ema.trainable
        np.testing.assert_array_equal(w_ema.numpy(), w.numpy())
    for step, batch in enumerate(batches(3)):
        before = values(w_ema for _, w_ema in pairs)
        raw_before = values(w for w, _ in pairs)
        train(model, [batch])
        raw = values(w for w, _ in pairs)
        assert any(not np.array_equal(a, b) for a, b in zip(raw, raw_before))  # the networks trained
        for (w, w_ema), old, new in zip(pairs, before, raw):
            d_t = np.float32(min(DECAY, (2.0 + step) / (11.0 + step)))
            expected = d_t * old + (np.float32(1) - d_t) * new
            np.testing.assert_allclose(w_ema.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=f"{w.path} step {step}")


@pytest.mark.parametrize("case", ["dcgan", "bigan", "aae"])
def test_training_is_the_same_with_and_without_the_average(case):
    """The average only watches: the raw weights train exactly as with ema_decay = 0."""
    off, on = build(case, decay=0.0), build(case)
    data = batches(3)
    train(off, data)
    train(on, data)
    raw_on = [w for w in on.weights if "ema_" not in w.path]
    assert len(raw_on) == len(off.weights)
    for a, b in zip(off.weights, raw_on):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# ---------------------------------------------------------------------------
# inference


@pytest.mark.parametrize("case", list(CASES))
def test_inference_uses_the_average(case):
    model = build(case)
    raw_twin = twin(model, case, averaged=False)
    # At construction the average is the network: the same outputs.
    assert_outputs_equal(outputs(model), outputs(raw_twin), atol=0)
    train(model, batches(3))
    averaged, raw = outputs(model), outputs(twin(model, case, averaged=False))
    assert_outputs_equal(averaged, outputs(twin(model, case, averaged=True)))
    for key in averaged:
        assert np.abs(np.asarray(averaged[key]) - np.asarray(raw[key])).max() > 1e-5, key
    # The same in a tf.function, and in the serving signatures.
    assert_outputs_equal(outputs(model, tf.function), averaged)
    z, _, labels = inputs()
    served = model.serving_signatures()["generate"](*((z, labels) if model.conditional else (z,)))["images"]
    np.testing.assert_allclose(served, averaged["generate"], atol=1e-6)


@pytest.mark.parametrize("case", ["gan", "bigan"])
def test_off_serves_the_raw_networks(case):
    model = build(case, decay=0.0)
    train(model, batches(2))
    z, images, _ = inputs()
    expected = base.from_tanh(model.generator(z, training=False))
    np.testing.assert_array_equal(model.generate(z), expected)
    if case == "bigan":
        np.testing.assert_array_equal(model.encode(images), model.encoder(base.to_tanh(images)))


@pytest.mark.parametrize("case", ["dcgan", "bigan"])
def test_mixed_bfloat16(case):
    """Under train.run's bf16 policy the averages stay float32 and inference runs on them."""
    with policy("mixed_bfloat16"):
        model = build(case)
        pairs = [pair for name in model.ema_networks for pair in model.ema_pairs(name)]
        assert all(w_ema.dtype == "float32" for _, w_ema in pairs)
        before = values(w_ema for _, w_ema in pairs)
        train(model, batches(1))
        for (w, w_ema), old in zip(pairs, before):
            d_1 = np.float32(2.0 / 11.0)  # d_t at t = 1
            expected = d_1 * old + (np.float32(1) - d_1) * w.numpy()
            np.testing.assert_allclose(w_ema.numpy(), expected, rtol=1e-6, atol=1e-7)
        averaged = outputs(model)
        assert all(v.dtype == tf.float32 for v in averaged.values())
        assert_outputs_equal(averaged, outputs(twin(model, case, averaged=True)))
        # traced, against the twin traced too: on a CPU with bfloat16 units the graph's fused bf16 kernels round
        # otherwise than the eager ops (by ~1e-3), so a traced call is compared with a traced call
        assert_outputs_equal(outputs(model, tf.function), outputs(twin(model, case, averaged=True), tf.function))


# ---------------------------------------------------------------------------
# saving, resuming, serving


def checkpoint_of(model):
    """A tf.train.Checkpoint as train.run makes it."""
    optimizers = {f"optimizer_{i}": opt for i, opt in enumerate(model.optimizer_list())}
    return tf.train.Checkpoint(model=model, **optimizers)


@pytest.mark.parametrize("case", ["dcgan", "bigan", "aae"])
def test_a_checkpoint_resumes_the_average_exactly(case, tmp_path):
    data = batches(4)
    model = build(case)
    train(model, data[:2])
    path = checkpoint_of(model).save(str(tmp_path / "ckpt"))
    saved = model.get_weights()
    train(model, data[2:])  # the uninterrupted run

    resumed = build(case)
    checkpoint_of(resumed).restore(path).assert_existing_objects_matched()
    for a, b in zip(saved, resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    train(resumed, data[2:])
    for w, a, b in zip(model.weights, model.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=w.path)
    assert_outputs_equal(outputs(resumed), outputs(model), atol=0)


@pytest.mark.parametrize("case", ["dcgan", "bigan"])
def test_keras_file_round_trip_continues_the_average(case, tmp_path):
    model = build(case)
    train(model, batches(2))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_outputs_equal(outputs(loaded), outputs(model), atol=0)
    more = batches(2, seed=1)
    train(model, more)
    train(loaded, more)
    for w, a, b in zip(model.weights, model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=w.path)


@pytest.mark.parametrize("case, precision", [("dcgan", "float32"), ("bigan", "mixed_bfloat16")])
def test_export_serves_the_average(case, precision, tmp_path):
    """export.saved_model (verified in a fresh process by export.verify) serves
    the averaged networks, not the raw ones."""
    with policy(precision):
        model = build(case)
        train(model, batches(3))
        path = saved_model.export(model, str(tmp_path), case)
        averaged = outputs(saved_model.in_precision(model))  # what the export computes: float32
        raw = outputs(twin(model, case, averaged=False))
    loaded = tf.saved_model.load(path)
    z, images, _ = inputs()
    served = {"generate": loaded.signatures["generate"](z=z)["images"]}
    if case == "bigan":
        served["encode"] = loaded.signatures["encode"](images=images)["z"]
        served["reconstruct"] = loaded.signatures["reconstruct"](images=images)["images"]
    for key, value in served.items():
        np.testing.assert_allclose(value, averaged[key], atol=1e-5, err_msg=key)
        assert np.abs(np.asarray(value) - np.asarray(raw[key])).max() > 1e-5, key


def test_train_run_takes_the_option_resumes_and_exports(train_run, tmp_path):
    """--ema_decay through train.run in bf16: a run, its resumption from the
    checkpoint, and the export (verified in a fresh process)."""
    workdir, base_path = str(tmp_path / "work"), str(tmp_path / "serving")
    args = ["--model=dcgan", f"--workdir={workdir}", "--dataset=digits", "--batch_size=16",
            "--steps_per_epoch=2", "--latent_dim=4", "--ema_decay=0.9", "--mixed_precision=bf16",
            "--verbose=0"]
    first = train_run(*args, "--epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = train_run(*args, "--epochs=2", f"--export_base={base_path}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    assert os.listdir(os.path.join(base_path, "dcgan")) == ["1"]
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert model.config.ema_decay == 0.9 and model.ema_pairs("generator")


def test_raw_weights_serve_the_trained_networks_within_and_the_average_after():
    """model.raw_weights() (train.evaluate --weights=raw) runs inference on the raw weights."""
    model = build("gan")
    train(model, batches(3))
    z, _, _ = inputs()
    averaged = model.generate(z).numpy()
    raw = base.from_tanh(model.generator(z, training=False)).numpy()
    assert np.abs(averaged - raw).max() > 1e-4
    with model.raw_weights():
        np.testing.assert_array_equal(model.generate(z).numpy(), raw)
    np.testing.assert_array_equal(model.generate(z).numpy(), averaged)
