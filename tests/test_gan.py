"""The GAN family (zoo/gan.py) and its losses (zoo/losses.py): tiny shapes,
few steps, fixed seeds."""

import math

import keras
from conftest import run_mirrored_check
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import losses

SHAPE, CLASSES = (8, 8, 1), 3
TINY = dict(latent_dim=8)


def build(name="gan", **config):
    return zoo.build(name, image_shape=SHAPE, num_classes=CLASSES, **{**TINY, **config})


def real_batch(n=16, seed=0):
    """'Real' images: bright top half, dark bottom half, a little noise; labels."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, *SHAPE), np.float32)
    images[:, : SHAPE[0] // 2] = 0.9
    images = np.clip(images + 0.05 * rng.standard_normal(images.shape), 0, 1).astype(np.float32)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    return images, labels


def dataset(conditional, n=32, batch=8):
    images, labels = real_batch(n)
    data = (images, labels) if conditional else images
    return tf.data.Dataset.from_tensor_slices(data).batch(batch, drop_remainder=True)


def labels_for(model, labels):
    return labels if model.conditional else None


# ---------------------------------------------------------------------------
# losses.py against its formulas


def test_minimax_discriminator_loss_at_logit_zero_is_2_log_2():
    d = losses.minimax_discriminator_loss(tf.zeros([4]), tf.zeros([4]))
    np.testing.assert_allclose(d, 2 * math.log(2), rtol=1e-6)
    # D = 1/2 is the optimal D when p_g = p_data, where V(G, D*) = -log 4.
    np.testing.assert_allclose(-tf.reduce_mean(d), -math.log(4), rtol=1e-6)


def test_losses_match_their_formulas_on_known_logits():
    real = np.array([-2.0, -0.5, 0.0, 1.5, 3.0], np.float32)
    fake = np.array([1.0, -1.0, 0.3, -2.5, 0.0], np.float32)
    s_real, s_fake = 1 / (1 + np.exp(-real)), 1 / (1 + np.exp(-fake))
    t = 0.9
    expected = {
        "minimax_d": -(t * np.log(s_real) + (1 - t) * np.log(1 - s_real)) - np.log(1 - s_fake),
        "minimax_g": np.log(1 - s_fake),
        "non_saturating_g": -np.log(s_fake),
        "least_squares_d": 0.5 * (real - t) ** 2 + 0.5 * fake**2,
        "least_squares_g": 0.5 * (fake - 1) ** 2,
        "wasserstein_d": fake - real,
        "wasserstein_g": -fake,
    }
    got = {
        "minimax_d": losses.minimax_discriminator_loss(real, fake, real_target=t),
        "minimax_g": losses.minimax_generator_loss(fake),
        "non_saturating_g": losses.non_saturating_generator_loss(fake),
        "least_squares_d": losses.least_squares_discriminator_loss(real, fake, real_target=t),
        "least_squares_g": losses.least_squares_generator_loss(fake),
        "wasserstein_d": losses.wasserstein_discriminator_loss(real, fake, real_target=t),
        "wasserstein_g": losses.wasserstein_generator_loss(fake),
    }
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # The pairs registered under each name.
    assert losses.get("non_saturating") == (
        losses.minimax_discriminator_loss,
        losses.non_saturating_generator_loss,
    )
    assert losses.get("minimax")[1] is losses.minimax_generator_loss
    assert set(losses.LOSSES) == {"non_saturating", "minimax", "least_squares", "wasserstein_gp", "hinge"}


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w . x has gradient w everywhere: penalty = weight (||w|| - 1)^2.
    w = tf.constant([3.0, 4.0])
    real = tf.random.stateless_normal([5, 2], [1, 2])
    fake = tf.random.stateless_normal([5, 2], [3, 4])
    penalty = losses.gradient_penalty(lambda x: tf.linalg.matvec(x, w), real, fake, [0, 0], weight=10.0)
    np.testing.assert_allclose(penalty, np.full(5, 10.0 * (5.0 - 1.0) ** 2), rtol=1e-5)


def test_unknown_loss_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        build("gan", loss="squared_hinge")
    for name in losses.LOSSES:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="non_saturating"):
        losses.get("squared_hinge")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="d_steps"):
        build("gan", d_steps=0)
    with pytest.raises(ValueError, match="real_target"):
        build("gan", real_target=1.5)
    with pytest.raises(ValueError, match="valid options"):
        build("gan", beta=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        zoo.build("cgan", image_shape=SHAPE, num_classes=0)
    model = build("gan")
    with pytest.raises(ValueError, match="d_optimizer"):
        model.compile(optimizer="adam")


# ---------------------------------------------------------------------------
# the registry, defaults and the compile contract of train.run


def test_registered_with_their_defaults():
    assert {"gan", "dcgan", "cgan"} <= set(zoo.names())
    assert zoo.get("gan") is zoo.GAN and zoo.get("dcgan") is zoo.DCGAN and zoo.get("cgan") is zoo.CGAN
    assert zoo.default_config("gan")["net"] == "mlp"
    assert zoo.default_config("dcgan")["net"] == "conv"
    assert zoo.default_config("dcgan")["latent_dim"] == 100
    assert zoo.default_config("gan")["loss"] == "non_saturating"
    assert zoo.default_config("dcgan")["d_dropout"] == 0.3
    assert zoo.default_config("gan")["real_target"] == 0.9  # one-sided label smoothing
    assert zoo.default_config("dcgan")["real_target"] == 1.0  # the tutorial's
    assert zoo.default_config("gan")["d_steps"] == 1
    assert zoo.CGAN.conditional and not zoo.GAN.conditional


def test_dcgan_has_the_tutorial_shapes_on_mnist():
    model = zoo.build("dcgan", image_shape=(28, 28, 1), width=1.0, d_hidden=0)
    assert model.generator.input_shape == (None, 100)
    assert [l.output.shape[1:] for l in model.generator.layers if "conv2d_transpose" in l.name] == [
        (7, 7, 128),
        (14, 14, 64),
        (28, 28, 1),
    ]
    assert model.generate(2).shape == (2, 28, 28, 1)
    assert model.discriminate(np.zeros((2, 28, 28, 1), np.float32)).shape == (2,)


def test_compile_defaults_and_optimizer_list():
    model = build("gan")
    model.compile(**model.compile_defaults(1e-3))
    d_opt, g_opt = model.optimizer_list()
    assert d_opt is model.d_optimizer and g_opt is model.g_optimizer and d_opt is not g_opt
    assert model.optimizer is g_opt
    np.testing.assert_allclose(float(d_opt.learning_rate), 1e-3)
    np.testing.assert_allclose(float(g_opt.beta_1), 0.5)
    model.compile()  # defaults when none are given (what load_model needs)
    np.testing.assert_allclose(float(model.d_optimizer.learning_rate), 2e-4)


# ---------------------------------------------------------------------------
# the game


GAMES = [("gan", loss) for loss in losses.LOSSES] + [("dcgan", "non_saturating"), ("cgan", "non_saturating")]


def game_setup(name, loss):
    """A compiled model without dropout, a real batch, its labels and a fixed z."""
    keras.utils.set_random_seed(0)
    model = build(name, loss=loss, d_dropout=0.0)
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    images, labels = real_batch()
    z = tf.random.stateless_normal([len(images), model.latent_dim], [7, 7])
    return model, images, labels_for(model, labels), z


@pytest.mark.parametrize("name,loss", GAMES)
def test_discriminator_steps_lower_the_discriminator_loss(name, loss):
    model, images, labels, z = game_setup(name, loss)
    before = model.adversarial_losses(images, labels, z=z)
    g_weights = [w.numpy() for w in model.generator.trainable_weights]
    step = tf.function(model.discriminator_step)
    for _ in range(15):
        step(images, labels)
    after = model.adversarial_losses(images, labels, z=z)
    assert float(tf.reduce_mean(after["d_loss"])) < float(tf.reduce_mean(before["d_loss"])) - 0.1
    assert float(tf.reduce_mean(after["d_real"])) > float(tf.reduce_mean(before["d_real"]))
    assert float(tf.reduce_mean(after["d_fake"])) < float(tf.reduce_mean(before["d_fake"]))
    for w, w0 in zip(model.generator.trainable_weights, g_weights):
        np.testing.assert_array_equal(w.numpy(), w0)  # G is fixed while D steps
    assert int(model.d_optimizer.iterations) == 15 and int(model.g_optimizer.iterations) == 0


@pytest.mark.parametrize("name,loss", GAMES)
def test_generator_steps_lower_the_generator_loss(name, loss):
    model, images, labels, z = game_setup(name, loss)
    before = model.adversarial_losses(images, labels, z=z, training=True)
    d_weights = [w.numpy() for w in model.discriminator.weights]
    step = tf.function(model.generator_step)
    for _ in range(10):
        step(len(images), labels)
    after = model.adversarial_losses(images, labels, z=z, training=True)
    assert float(tf.reduce_mean(after["g_loss"])) < float(tf.reduce_mean(before["g_loss"])) - 0.02
    assert float(tf.reduce_mean(after["d_fake"])) > float(tf.reduce_mean(before["d_fake"]))
    for w, w0 in zip(model.discriminator.weights, d_weights):
        np.testing.assert_array_equal(w.numpy(), w0)  # D is fixed while G steps
    assert int(model.g_optimizer.iterations) == 10 and int(model.d_optimizer.iterations) == 0


def test_d_steps_discriminator_updates_per_generator_update():
    images, _ = real_batch(8)
    final = {}
    for d_steps in (1, 3):
        keras.utils.set_random_seed(0)
        model = build("gan", d_steps=d_steps, d_dropout=0.0)
        # G's learning rate 0: G stays put, so D's loss must fall, and fall
        # further with more D updates per step.
        model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.SGD(0.0))
        z = tf.random.stateless_normal([8, model.latent_dim], [7, 7])
        before = float(tf.reduce_mean(model.adversarial_losses(images, z=z)["d_loss"]))
        history = model.fit(dataset(False, n=32, batch=8), epochs=1, verbose=0)  # 4 train steps
        assert int(model.d_optimizer.iterations) == 4 * d_steps
        assert int(model.g_optimizer.iterations) == 4
        assert set(history.history) == {"d_loss", "g_loss", "d_real", "d_fake"}
        final[d_steps] = float(tf.reduce_mean(model.adversarial_losses(images, z=z)["d_loss"]))
        assert final[d_steps] < before
    assert final[3] < final[1]


def test_g_steps_generator_updates_per_step():
    images, _ = real_batch(8)
    final = {}
    for g_steps in (1, 3):
        keras.utils.set_random_seed(0)
        model = build("gan", g_steps=g_steps, d_dropout=0.0)
        # D's learning rate 0: D stays put, so G's loss must fall, and fall
        # further with more G updates per step.
        model.compile(d_optimizer=keras.optimizers.SGD(0.0), g_optimizer=keras.optimizers.Adam(1e-3))
        z = tf.random.stateless_normal([8, model.latent_dim], [7, 7])
        before = float(tf.reduce_mean(model.adversarial_losses(images, z=z)["g_loss"]))
        model.fit(dataset(False, n=32, batch=8), epochs=1, verbose=0)  # 4 train steps
        assert int(model.g_optimizer.iterations) == 4 * g_steps and int(model.d_optimizer.iterations) == 4
        final[g_steps] = float(tf.reduce_mean(model.adversarial_losses(images, z=z)["g_loss"]))
        assert final[g_steps] < before
    assert final[3] < final[1]
    with pytest.raises(ValueError, match="g_steps must be an integer >= 1, got 0"):
        build("gan", g_steps=0)


@pytest.mark.parametrize("name,update", [("gan", "alternating"), ("cgan", "simultaneous")])
def test_each_discriminator_update_takes_its_own_minibatch(name, update):
    """Algorithm 1 samples a fresh minibatch of data for each of the k D
    updates: a train step's batch of k * m rows gives update t the rows
    t, t + k, t + 2k, ... (what each replica's block gives it under
    MirroredStrategy too), and G's update m fakes."""
    images, labels = real_batch(12)
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = build(name, d_steps=3, d_dropout=0.0, update=update)
        model.compile(d_optimizer=keras.optimizers.SGD(0.1), g_optimizer=keras.optimizers.SGD(0.1))
        models.append(model)
    stepped, by_hand = models
    assert stepped.real_batches_per_step == 3 and zoo.build("gan").real_batches_per_step == 1
    stepped.train_step((tf.constant(images), tf.constant(labels)))
    seed = lambda t, stream: zoo.base.step_seed(by_hand.seed, tf.constant(t, tf.int64), stream)
    cond = lambda t: labels[t::3] if by_hand.conditional else None
    for t in range(2):
        by_hand.discriminator_step(images[t::3], cond(t), seed=seed(t, zoo.gan.D_NOISE))
    if update == "simultaneous":
        by_hand.simultaneous_step(images[2::3], cond(2))
    else:
        by_hand.discriminator_step(images[2::3], cond(2), seed=seed(2, zoo.gan.D_NOISE))
        by_hand.generator_step(4, cond(2))
    by_hand.update_ema()  # cgan averages G's weights
    for a, b in zip(stepped.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(stepped.d_optimizer.iterations) == 3 and int(stepped.g_optimizer.iterations) == 1


def test_train_run_batches_k_minibatches_per_step(tmp_path):
    from train import run

    config = {"model": "gan", "dataset": "digits", "image_size": None, "seed": 0,
              "model_options": {"d_steps": 2, "latent_dim": 4},
              "training": {"epochs": 1, "batch_size": 900, "learning_rate": 2e-4}}
    with pytest.raises(run.RunError, match=r"a gan train step takes 2 minibatches \(1800 rows\), more than the 1617"):
        run.train(str(tmp_path / "big"), config, verbose=0)
    config["training"]["batch_size"] = 200  # 1617 // 400 = 4 steps of 2 D updates each
    run.train(str(tmp_path / "w"), config, verbose=0, jit_compile="off")
    model = keras.models.load_model(str(tmp_path / "w" / "model.keras"))
    assert int(model.g_optimizer.iterations) == 4 and int(model.d_optimizer.iterations) == 8


@pytest.mark.parametrize("name", ["dcgan", "cgan"])
def test_simultaneous_step_takes_both_gradients_at_the_current_players(name):
    """update=simultaneous: D moves by -lr * grad_D mean d_loss and G by
    -lr * grad_G mean g_loss, both at the (D, G) of before the step, on one z."""
    images, labels = real_batch(8)
    labels = labels if name == "cgan" else None
    model = build(name, d_dropout=0.0, update="simultaneous")
    model.compile(d_optimizer=keras.optimizers.SGD(0.1), g_optimizer=keras.optimizers.SGD(0.1))
    seed = tf.constant([3, 4], tf.int64)
    z = tf.random.stateless_normal([8, model.latent_dim], seed)
    d_vars, g_vars = model.discriminator.trainable_variables, model.generator.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        out = model.adversarial_losses(images, labels, z=z, training=True)
        d_loss, g_loss = tf.reduce_mean(out["d_loss"]), tf.reduce_mean(out["g_loss"])
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(d_vars, tape.gradient(d_loss, d_vars))]
    expected += [v.numpy() - 0.1 * g.numpy() for v, g in zip(g_vars, tape.gradient(g_loss, g_vars))]
    before = [v.numpy() for v in d_vars + g_vars]
    result = model.simultaneous_step(images, labels, seed=seed)
    np.testing.assert_allclose(float(tf.reduce_mean(result["g_loss"])), float(g_loss), rtol=1e-5)
    for v, e, b in zip(d_vars + g_vars, expected, before):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-5)
    assert max(float(np.max(np.abs(v.numpy() - b))) for v, b in zip(g_vars, before[len(d_vars):])) > 1e-4


def test_simultaneous_update_with_d_steps_makes_k_d_updates_per_g_update():
    model = build("dcgan", d_steps=3)
    assert model.config.update == "simultaneous"  # dcgan's default, the TF tutorial's step
    model.compile(**model.compile_defaults())
    history = model.fit(dataset(False, n=32, batch=8), epochs=2, verbose=0).history
    assert int(model.d_optimizer.iterations) == 3 * 8 and int(model.g_optimizer.iterations) == 8
    assert all(np.isfinite(v).all() for v in history.values())


def test_cgan_learns_to_draw_the_class_it_is_given():
    """Two classes: class 0 lights the top half, class 1 the bottom half."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 512).astype(np.int32)
    images = np.zeros((512, *SHAPE), np.float32)
    images[labels == 0, :4], images[labels == 1, 4:] = 0.9, 0.9
    images = np.clip(images + 0.05 * rng.standard_normal(images.shape), 0, 1).astype(np.float32)
    model = zoo.build("cgan", image_shape=SHAPE, num_classes=2, latent_dim=8)
    model.compile(**model.compile_defaults(1e-3))

    def top_minus_bottom(label):
        g = model.generate(200, labels=label, seed=1).numpy()
        return float(g[:, :4].mean() - g[:, 4:].mean())

    assert abs(top_minus_bottom(0) - top_minus_bottom(1)) < 0.2  # untrained: no idea of classes
    data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(512, seed=0).batch(32, drop_remainder=True)
    model.fit(data, epochs=6, verbose=0)
    assert top_minus_bottom(0) > 0.5 and top_minus_bottom(1) < -0.5


def test_fit_on_unlabelled_data_is_an_error_for_cgan():
    model = build("cgan")
    model.compile()
    with pytest.raises(ValueError, match="conditional"):
        model.fit(dataset(False), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="conditional"):
        model.generate(2)


def _fit_weights(model_seed, name="dcgan"):
    keras.utils.set_random_seed(1)
    model = build(name, seed=model_seed)  # default dropout: its masks are seeded too
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(dataset(model.conditional), epochs=2, verbose=0)
    return model.get_weights(), history.history


def test_a_seed_reproduces_a_run():
    first, history = _fit_weights(5)
    second, _ = _fit_weights(5)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other, _ = _fit_weights(6)  # another model seed: other noise, other weights
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    # On this toy data G gains on D: its loss falls over the run.
    assert history["g_loss"][-1] < history["g_loss"][0] - 0.05


def test_wasserstein_gp_fits_conv_nets():
    """The gradient penalty differentiates through D's input gradient (second
    order through conv layers) and keeps the critic finite."""
    keras.utils.set_random_seed(0)
    model = build("dcgan", loss="wasserstein_gp", d_steps=2)
    model.compile(**model.compile_defaults())
    assert float(model.d_optimizer.beta_1) == 0.0
    history = model.fit(dataset(False, n=64, batch=16), epochs=2, verbose=0).history  # 2 minibatches of 8 a step
    assert all(np.isfinite(v).all() for v in history.values())
    assert int(model.d_optimizer.iterations) == 16 and int(model.g_optimizer.iterations) == 8
    # The critic's loss falls as it learns to score the data above the fakes.
    assert history["d_loss"][-1] < history["d_loss"][0]


# ---------------------------------------------------------------------------
# saving and serving


@pytest.mark.parametrize("name", ["gan", "dcgan", "cgan"])
def test_keras_save_load_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build(name)
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.SGD(1e-2))
    model.fit(dataset(model.conditional), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    z = tf.random.stateless_normal([6, model.latent_dim], [1, 1])
    images, labels = real_batch(6)
    labels = labels_for(model, labels)
    np.testing.assert_array_equal(loaded.generate(z, labels), model.generate(z, labels))
    np.testing.assert_array_equal(loaded.discriminate(images, labels), model.discriminate(images, labels))
    assert isinstance(loaded.g_optimizer, keras.optimizers.SGD)
    for opt, opt2 in zip(model.optimizer_list(), loaded.optimizer_list()):
        assert int(opt2.iterations) == int(opt.iterations) == 4
        for v, v2 in zip(opt.variables, opt2.variables):
            np.testing.assert_array_equal(v.numpy(), v2.numpy())


@pytest.mark.parametrize("name", ["gan", "cgan"])
def test_serving_signatures(name):
    model = build(name)
    signatures = model.serving_signatures()
    assert list(signatures) == ["generate", "discriminate", "sample", "sample_png"]
    z = tf.random.stateless_normal([3, model.latent_dim], [1, 1])
    images, labels = real_batch(3)
    extra = (tf.constant(labels),) if model.conditional else ()
    generated = signatures["generate"](z, *extra)["images"]
    assert generated.shape == (3, *SHAPE)
    assert float(tf.reduce_min(generated)) >= 0.0 and float(tf.reduce_max(generated)) <= 1.0
    np.testing.assert_allclose(generated, model(z if not extra else (z, labels)), atol=1e-6)
    probability = signatures["discriminate"](tf.constant(images), *extra)["probability"]
    assert probability.shape == (3,) and probability.dtype == tf.float32
    np.testing.assert_allclose(probability, model.discriminate(images, labels_for(model, labels)), atol=1e-6)
    inputs = [s.name for s in signatures["discriminate"].input_signature]
    assert inputs == (["images", "labels"] if model.conditional else ["images"])


@pytest.mark.parametrize("name", ["gan", "cgan"])
def test_call_and_predict_generate_from_z(name):
    model = build(name)
    z = np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1], np.int64)  # int64, as numpy and tf.data give them
    inputs = (z, labels) if model.conditional else z
    expected = model.generate(z, labels_for(model, labels))
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(model(inputs), expected, atol=1e-6)
    if model.conditional:  # one label for the whole batch
        np.testing.assert_allclose(model.generate(z, 2), model.generate(z, [2] * 5), atol=1e-6)


# ---------------------------------------------------------------------------
# distributed correctness


def test_mirrored_strategy_matches_one_device():
    """2 replicas on a global batch make the update one device makes on it
    (dcgan_ema: synchronized batch norm and G's moving average; gan_aug_r1: the
    default loss with d_steps=2; cgan_sn and cgan_g_steps: the conditional model;
    and the discriminator levers of tests/test_gan_levers.py: hinge + R1,
    DiffAugment, spectral norm; gan_conv_32_rgb: the DCGAN-sized nets, batch
    norm in D). Each model's default options are a case's without its levers,
    so no case runs them alone."""
    cases = ("dcgan_ema", "gan_hinge_r1", "gan_aug_r1", "dcgan_sn_aug", "cgan_sn", "cgan_g_steps", "gan_conv_32_rgb")
    result = run_mirrored_check(*cases)
    assert set(result) == set(cases)
    for name, r in result.items():
        assert r["moved"] > 1e-3, (name, r)  # the steps did change the weights
        assert r["max_diff"] < 1e-5, (name, r)
