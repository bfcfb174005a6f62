"""BiGAN: D's update and the joint (G, E) update each lower their own loss and
touch only their own networks, shapes and ranges, save/load, fit, serving
signatures, and MirroredStrategy equivalence."""


import numpy as np
import pytest
import tensorflow as tf

import keras
from conftest import run_mirrored_check, unchanged, weights
import zoo
from zoo import base, bigan, losses
from zoo.bigan import BiGAN

SHAPE = (8, 8, 1)
LATENT = 6


def build(**config):
    keras.utils.set_random_seed(0)
    config = {"latent_dim": LATENT, "d_dropout": 0.0, **config}
    model = zoo.build("bigan", image_shape=SHAPE, num_classes=10, seed=1, **config)
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), ge_optimizer=keras.optimizers.Adam(1e-3))
    return model


SEED = tf.constant([5, 5], tf.int64)


def mean_losses(model, x):
    real, fake = model.logits(x, SEED, training=True)
    return float(tf.reduce_mean(model.d_loss(real, fake))), float(tf.reduce_mean(model.ge_loss(real, fake)))


def test_registered_and_defaults():
    assert "bigan" in zoo.names() and zoo.get("bigan") is zoo.BiGAN
    config = zoo.default_config("bigan")
    assert config["latent_dim"] == 50 and config["net"] == "conv" and config["loss"] == "non_saturating"
    assert config["update"] == "simultaneous"
    old = {k: v for k, v in config.items() if k not in ("update", "width", "ema_decay")}  # a run saved before them
    assert BiGAN.saved_options(old)["update"] == "alternating"
    assert zoo.build("bigan", image_shape=SHAPE, **BiGAN.saved_options(old)).config.update == "alternating"
    with pytest.raises(ValueError, match="loss"):
        zoo.build("bigan", image_shape=SHAPE, loss="least_squares")


def test_ge_loss_is_flipped_label_bce():
    model = build()
    real, fake = tf.constant([[0.3], [-2.0]]), tf.constant([[1.5], [-0.7]])
    bce = keras.losses.binary_crossentropy
    expected = (
        bce(tf.zeros([2, 1]), real, from_logits=True) + bce(tf.ones([2, 1]), fake, from_logits=True)
    )
    np.testing.assert_allclose(model.ge_loss(real, fake).numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        model.d_loss(real, fake).numpy(), losses.minimax_discriminator_loss(real, fake).numpy()
    )
    minimax = build(loss="minimax")
    np.testing.assert_allclose(  # -V: log(1 - D(G(z), z)) + log D(x, E(x))
        minimax.ge_loss(real, fake).numpy(),
        (tf.math.log(1 - tf.sigmoid(fake)) + tf.math.log(tf.sigmoid(real)))[:, 0].numpy(),
        rtol=1e-5,
    )


@pytest.mark.parametrize("net", ["conv", "mlp"])
def test_discriminator_step_lowers_d_loss_only(digits64, net):
    model = build(net=net)
    x, _ = digits64
    g, e = weights(model.generator), weights(model.encoder)
    before, _ = mean_losses(model, x)
    for _ in range(10):
        model.discriminator_step(x)
    after, _ = mean_losses(model, x)
    assert after < before - 0.1, (before, after)
    assert unchanged(g, model.generator) and unchanged(e, model.encoder)
    assert int(model.d_optimizer.iterations) == 10 and int(model.ge_optimizer.iterations) == 0


@pytest.mark.parametrize("net", ["conv", "mlp"])
def test_ge_step_lowers_ge_loss_only(digits64, net):
    model = build(net=net)
    x, _ = digits64
    for _ in range(5):  # a D with an opinion
        model.discriminator_step(x)
    d = weights(model.discriminator)
    _, before = mean_losses(model, x)
    for _ in range(5):
        model.ge_step(x)
    _, after = mean_losses(model, x)
    assert after < before - 0.1, (before, after)
    assert unchanged(d, model.discriminator)


def test_simultaneous_step_takes_both_gradients_at_the_current_players(digits64):
    """update=simultaneous: D moves by -lr * grad_D mean d_loss and (G, E) by
    -lr * grad_(G,E) mean ge_loss, both at the (D, G, E) of before the step, on one z."""
    model = build(update="simultaneous")
    model.compile(d_optimizer=keras.optimizers.SGD(0.1), ge_optimizer=keras.optimizers.SGD(0.1))
    x, y = digits64
    players = model.optimizer_variables()
    d_vars, ge_vars = players["d_optimizer"], players["ge_optimizer"]
    seed = base.step_seed(model.seed, 0, bigan._D_NOISE)  # the first step's noise
    with tf.GradientTape(persistent=True) as tape:
        real, fake = model.logits(x, seed, training=True)
        d_loss, ge_loss = tf.reduce_mean(model.d_loss(real, fake)), tf.reduce_mean(model.ge_loss(real, fake))
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(d_vars, tape.gradient(d_loss, d_vars))]
    expected += [v.numpy() - 0.1 * g.numpy() for v, g in zip(ge_vars, tape.gradient(ge_loss, ge_vars))]
    before = [v.numpy() for v in d_vars + ge_vars]
    out = model.train_step((x, y))
    assert int(model.d_optimizer.iterations) == 1 and int(model.ge_optimizer.iterations) == 1
    np.testing.assert_allclose(float(out["ge_loss"]), float(ge_loss), rtol=1e-5)
    for v, e in zip(d_vars + ge_vars, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-5)
    moved = [float(np.max(np.abs(v.numpy() - b))) for v, b in zip(d_vars + ge_vars, before)]
    assert max(moved[: len(d_vars)]) > 1e-4 and max(moved[len(d_vars):]) > 1e-4


def test_shapes_and_ranges(digits64):
    model = zoo.build("bigan", image_shape=(28, 28, 1), latent_dim=LATENT)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    r = model.reconstruct(x).numpy()
    assert r.shape == x.shape and r.min() >= 0.0 and r.max() <= 1.0
    assert model.encode(x).shape == (3, LATENT)
    g = model.generate(4).numpy()
    assert g.shape == (4, 28, 28, 1) and g.min() >= 0.0 and g.max() <= 1.0
    p = model.discriminate(x, tf.zeros([3, LATENT])).numpy()
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    np.testing.assert_allclose(model(x).numpy(), r, atol=1e-6)


def test_fit_tracks_every_loss(digits64):
    model = build()
    x, y = digits64
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2, verbose=0)
    assert set(history.history) == {"d_loss", "ge_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert [int(o.iterations) for o in model.optimizer_list()] == [8, 8]
    result = model.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(32), verbose=0, return_dict=True)
    assert set(result) == set(history.history)


def test_compile_defaults_and_errors():
    model = zoo.build("bigan", image_shape=SHAPE, latent_dim=LATENT)
    model.compile(**model.compile_defaults())
    assert [float(o.learning_rate) for o in model.optimizer_list()] == pytest.approx([2e-4, 2e-4])
    assert [float(o.beta_1) for o in model.optimizer_list()] == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="ge_optimizer"):
        model.compile(optimizer="adam")


def test_save_load_round_trip(digits64, tmp_path):
    model = build(d_dropout=0.3)
    x, y = digits64
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
    path = str(tmp_path / "bigan.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, BiGAN) and loaded.get_config() == model.get_config()
    z = tf.random.stateless_normal([5, LATENT], [0, 0])
    np.testing.assert_array_equal(loaded.encode(x).numpy(), model.encode(x).numpy())
    np.testing.assert_array_equal(loaded.generate(z).numpy(), model.generate(z).numpy())
    np.testing.assert_array_equal(loaded.reconstruct(x).numpy(), model.reconstruct(x).numpy())
    np.testing.assert_array_equal(
        loaded.discriminate(x[:5], z).numpy(), model.discriminate(x[:5], z).numpy()
    )
    for a, b in zip(model.optimizer_list(), loaded.optimizer_list()):
        assert type(a) is type(b) and int(b.iterations) == 2
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_serving_signatures(digits64):
    model = build()
    x, _ = digits64
    signatures = model.serving_signatures()
    assert list(signatures) == ["generate", "encode", "reconstruct", "discriminate", "sample", "sample_png"]
    z = tf.zeros([3, LATENT])
    assert signatures["generate"](z)["images"].shape == (3, *SHAPE)
    assert signatures["encode"](x[:3])["z"].shape == (3, LATENT)
    assert signatures["reconstruct"](x[:3])["images"].shape == (3, *SHAPE)
    out = signatures["discriminate"](x[:3], z)["probability"]
    assert out.shape == (3,) and out.dtype == tf.float32
    fn = signatures["discriminate"].get_concrete_function()
    assert [s.name for s in fn.structured_input_signature[0]] == ["images", "z"]
    assert fn.structured_outputs["probability"].shape.as_list() == [None]


def test_mixed_precision(digits64):
    """bfloat16 compute, as train.run's --mixed_precision=bf16 (float16 is covered in test_aae)."""
    x, y = digits64
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build()
        history = model.fit(tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16), epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert model.encode(x[:2]).dtype == tf.float32 and model.reconstruct(x[:2]).dtype == tf.float32


def test_mirrored_strategy_matches_one_device():
    """2 replicas on a global batch make the updates one device makes on it
    (bigan_ema: conv nets, the generator's synchronized batch norm, and G's and E's
    moving averages, all with the default simultaneous update; mlp; bigan_aug: DiffAugment's draws of the global batch, with the alternating update). The
    default options are each case's without its lever, so no case runs them alone."""
    result = run_mirrored_check("bigan_ema", "bigan_mlp", "bigan_aug")
    assert set(result) == {"bigan_ema", "bigan_mlp", "bigan_aug"}
    for name, r in result.items():
        assert r["moved"] > 1e-3, (name, r)  # the steps did change the weights
        assert r["max_diff"] < 1e-5, (name, r)
