"""The GAN family's discriminator levers (zoo/gan.py options; BiGAN's augment):
the hinge loss, the R1 penalty, spectral normalisation, two time-scale learning
rates and DiffAugment, each against its maths. Tiny shapes, fixed seeds. (The
hinge pair's D and G steps are in test_gan.py's GAMES; the MirroredStrategy
equivalence of every lever in test_gan.py and test_bigan.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import augment, base, bigan, gan, losses
from zoo.layers import SpectralNormalization

SHAPE, CLASSES = (8, 8, 1), 3
SEED = tf.constant([3, 4], tf.int64)
fold = tf.random.experimental.stateless_fold_in


def build(name="gan", **config):
    keras.utils.set_random_seed(0)
    return zoo.build(name, image_shape=SHAPE, num_classes=CLASSES, **{"latent_dim": 8, "d_dropout": 0.0, **config})


def real_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, *SHAPE), np.float32)
    images[:, :4] = 0.9
    images = np.clip(images + 0.05 * rng.standard_normal(images.shape), 0, 1).astype(np.float32)
    return images, rng.integers(0, CLASSES, n).astype(np.int32)


def sgd(model, lr=0.1):
    model.compile(d_optimizer=keras.optimizers.SGD(lr), g_optimizer=keras.optimizers.SGD(lr))
    return model


# ---------------------------------------------------------------------------
# hinge loss


def test_hinge_losses_match_their_formulas():
    real = np.array([-2.0, -0.5, 0.0, 0.7, 1.0, 3.0], np.float32)
    fake = np.array([1.0, -1.0, 0.3, -2.5, 0.0, -0.9], np.float32)
    expected = np.maximum(0, 1 - real) + np.maximum(0, 1 + fake)
    for t in (1.0, 0.9):  # real_target is ignored
        np.testing.assert_allclose(losses.hinge_discriminator_loss(real, fake, real_target=t), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.hinge_generator_loss(fake), -fake)
    assert losses.get("hinge") == (losses.hinge_discriminator_loss, losses.hinge_generator_loss)
    # Outside the margins D's loss is flat: a confident D gets no gradient.
    r, f = tf.constant([2.0, 0.5]), tf.constant([-2.0, -0.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([r, f])
        d = tf.reduce_sum(losses.hinge_discriminator_loss(r, f))
    np.testing.assert_array_equal(tape.gradient(d, r), [0.0, -1.0])
    np.testing.assert_array_equal(tape.gradient(d, f), [0.0, 1.0])


# ---------------------------------------------------------------------------
# R1


def test_r1_penalty_of_a_linear_critic_is_the_same_everywhere():
    # D(x) = sum(w * x) has gradient w at every x: penalty weight/2 ||w||^2.
    w = tf.constant(np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32))
    x = tf.random.stateless_normal([5, *SHAPE], [1, 2])
    penalty = losses.r1_penalty(lambda v: tf.reduce_sum(v * w, axis=[1, 2, 3]), x, weight=3.0)
    np.testing.assert_allclose(penalty, np.full(5, 1.5 * float(tf.reduce_sum(w**2))), rtol=1e-5)


def test_r1_penalty_of_a_quadratic_critic():
    # D(x) = 1/2 x^T A x (A symmetric) has gradient A x: penalty weight/2 ||A x||^2 per example.
    rng = np.random.default_rng(1)
    m = rng.standard_normal((4, 4)).astype(np.float32)
    a = tf.constant(m + m.T)
    x = tf.constant(rng.standard_normal((6, 4)).astype(np.float32))
    critic = lambda v: 0.5 * tf.reduce_sum(v * tf.linalg.matvec(a, v), axis=1)  # noqa: E731
    expected = 0.5 * 10.0 * np.sum((x.numpy() @ (m + m.T)) ** 2, axis=1)
    np.testing.assert_allclose(losses.r1_penalty(critic, x, weight=10.0), expected, rtol=1e-5)


def test_r1_penalty_is_differentiable_in_the_critics_weights():
    # penalty weight/2 ||w||^2 per example: its gradient in w is weight * w per example.
    w = tf.Variable([3.0, -4.0])
    x = tf.random.stateless_normal([5, 2], [1, 2])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.r1_penalty(lambda v: tf.linalg.matvec(v, w), x, weight=2.0))
    np.testing.assert_allclose(tape.gradient(total, w), 5 * 2.0 * w.numpy(), rtol=1e-6)


def expected_d_loss(model, images, labels, policy=""):
    """d_loss(D(T(x)), D(T(G(z)))) + R1 at T(x), written out from the formulas."""
    cond = model.condition(labels)
    critic = lambda v: model._d_logits(v, cond, True)  # noqa: E731
    z = base.replica_normal(len(images), model.latent_dim, SEED)
    fake = model._fake(z, cond, True)
    real = base.to_tanh(images)
    if policy:
        real = augment.apply(real, policy, fold(SEED, gan.AUG_REAL))
        fake = augment.apply(fake, policy, fold(SEED, gan.AUG_FAKE))
    d = model.d_loss_fn(critic(real), critic(fake), model.config.real_target)
    return d, losses.r1_penalty(critic, real, model.config.r1_weight), losses.r1_penalty(critic, base.to_tanh(images), 1.0)


@pytest.mark.parametrize("name,policy", [("gan", ""), ("cgan", ""), ("dcgan", "translation,cutout")])
def test_r1_is_added_to_the_discriminator_loss(name, policy):
    """d_loss of a D step = the loss pair's + r1_weight/2 ||grad D||^2 at D's real
    input (CGAN: D(x | y); with augment: at the augmented reals)."""
    model = sgd(build(name, r1_weight=4.0, augment=policy, loss="hinge"))
    images, labels = real_batch()
    labels = labels if model.conditional else None
    d, r1, r1_plain = expected_d_loss(model, images, labels, policy)
    assert float(tf.reduce_min(r1)) > 1e-4
    got = model.discriminator_step(images, labels, seed=SEED)["d_loss"]
    np.testing.assert_allclose(got, d + r1, rtol=1e-4, atol=1e-5)
    if policy:  # the penalty is taken at the augmented reals, not the images themselves
        assert np.max(np.abs(r1.numpy() - 4.0 * r1_plain.numpy())) > 1e-4


def test_bad_lever_options_are_rejected():
    with pytest.raises(ValueError, match="r1_weight"):
        build("gan", r1_weight=-1.0)
    with pytest.raises(ValueError, match="d_lr_multiplier"):
        build("gan", d_lr_multiplier=0.0)
    for name in ("gan", "dcgan", "cgan", "bigan"):
        with pytest.raises(ValueError, match="valid: .*translation") as error:
            zoo.build(name, image_shape=SHAPE, num_classes=CLASSES, augment="translation,flip")
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------
# spectral normalisation


@pytest.mark.parametrize(
    "layer,shape",
    [(lambda: keras.layers.Dense(16), (4, 24)), (lambda: keras.layers.Conv2D(8, 3, strides=2), (2, 7, 7, 5))],
)
def test_spectral_norm_sigma_converges_to_the_largest_singular_value(layer, shape):
    keras.utils.set_random_seed(0)
    sn = SpectralNormalization(layer())
    x = tf.random.stateless_normal(shape, [0, 1])
    sn(x)
    kernel = sn.layer.kernel.numpy().copy()
    largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    step = tf.function(lambda v: sn(v, training=True))
    for _ in range(60):  # one power iteration per training call
        step(x)
    assert abs(float(sn.sigma()) - largest) < 0.02 * largest
    np.testing.assert_array_equal(sn.layer.kernel.numpy(), kernel)  # the kernel itself is untouched
    u = sn.vector_u.numpy()
    sn(x, training=False)  # inference reads u without iterating
    np.testing.assert_array_equal(sn.vector_u.numpy(), u)


def test_spectral_norm_reads_u_as_a_unit_vector_before_any_training_call():
    """Inference on an untrained layer divides by ||W u / |u| ||, not by ||W u||
    with the random start's arbitrary length."""
    keras.utils.set_random_seed(0)
    sn = SpectralNormalization(keras.layers.Dense(1))
    x = tf.random.stateless_normal([3, 7], [0, 1])
    sn(x)
    w, u = sn.layer.kernel.numpy(), sn.vector_u.numpy()
    sigma = np.linalg.norm(w @ (u / np.linalg.norm(u)))
    np.testing.assert_allclose(float(sn.sigma()), sigma, rtol=1e-5)
    expected = x.numpy() @ (w / sigma) + sn.layer.bias.numpy()
    np.testing.assert_allclose(sn(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_spectral_norm_computes_with_w_over_sigma_and_differentiates_sigma():
    """y = x W / ||W u|| + b for a Dense, and the kernel's gradient is that of
    this function of W (u fixed), which includes the term of sigma(W)."""
    keras.utils.set_random_seed(0)
    sn = SpectralNormalization(keras.layers.Dense(5))
    x = tf.random.stateless_normal([3, 7], [0, 1])
    sn(x)
    upstream = tf.random.stateless_normal([3, 5], [2, 3])
    w_var, b = sn.layer.kernel, sn.layer.bias.numpy()
    with tf.GradientTape() as tape:
        y = sn(x, training=True)  # one iteration, then W / sigma with the new u
        loss = tf.reduce_sum(y * upstream)
    grad = tape.gradient(loss, w_var)
    u = tf.constant(sn.vector_u.numpy())
    w = tf.constant(w_var.numpy())
    with tf.GradientTape() as tape:
        tape.watch(w)
        expected_y = x @ (w / tf.norm(tf.linalg.matvec(w, u))) + b
        expected_loss = tf.reduce_sum(expected_y * upstream)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(expected_loss, w), rtol=1e-4, atol=1e-6)
    with tf.GradientTape() as tape:  # the gradient with sigma held constant differs
        tape.watch(w)
        constant_sigma = tf.reduce_sum((x @ w / tf.stop_gradient(tf.norm(tf.linalg.matvec(w, u))) + b) * upstream)
    assert np.max(np.abs(grad.numpy() - tape.gradient(constant_sigma, w).numpy())) > 1e-4


def _dense_and_conv(net):
    return [l for l in net.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))]


@pytest.mark.parametrize("name,net", [("gan", "mlp"), ("dcgan", "conv"), ("cgan", "mlp"), ("cgan", "conv")])
def test_spectral_norm_wraps_every_discriminator_layer(name, net):
    off, on = build(name, net=net), build(name, net=net, spectral_norm=True)
    assert not any(isinstance(l, SpectralNormalization) for l in off.discriminator.layers)
    plain = _dense_and_conv(off.discriminator)
    wrapped = [l for l in on.discriminator.layers if isinstance(l, SpectralNormalization)]
    assert len(plain) >= 2 and not _dense_and_conv(on.discriminator)  # no bare Dense/Conv2D left
    assert [type(l.layer) for l in wrapped] == [type(l) for l in plain]  # the joint layer and the logit too
    assert not any(isinstance(l, SpectralNormalization) for l in on.generator.layers)


def test_spectral_norm_keeps_d_fixed_during_the_generator_step():
    model = sgd(build("dcgan", spectral_norm=True, update="alternating"))
    d_weights = [w.numpy() for w in model.discriminator.trainable_weights]
    model.generator_step(8, seed=SEED)
    for w, w0 in zip(model.discriminator.trainable_weights, d_weights):
        np.testing.assert_array_equal(w.numpy(), w0)


def test_spectral_norm_bounds_the_trained_discriminator_layers():
    """After training, every wrapped layer's W / sigma has spectral norm ~1."""
    model = build("dcgan", spectral_norm=True)
    model.compile(**model.compile_defaults(1e-3))
    images, _ = real_batch(32)
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=3, verbose=0)
    for layer in model.discriminator.layers:
        if isinstance(layer, SpectralNormalization):
            kernel = layer.layer.kernel.numpy()
            largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
            assert abs(largest / float(layer.sigma()) - 1.0) < 0.05, layer.name


def test_spectral_norm_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build("dcgan", spectral_norm=True, augment="translation", r1_weight=1.0)
        model.compile(**model.compile_defaults())
        images, _ = real_batch(16)
        history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v).all() for v in history.values())
    wrapped = [l for l in model.discriminator.layers if isinstance(l, SpectralNormalization)]
    assert all(l.vector_u.dtype == "float32" for l in wrapped)
    assert wrapped[0].compute_dtype == "bfloat16" and wrapped[-1].compute_dtype == "float32"  # the logit
    assert model.discriminate(images).dtype == tf.float32


def test_spectral_norm_save_load_round_trip(tmp_path):
    model = build("cgan", spectral_norm=True)
    model.compile(**model.compile_defaults())
    images, labels = real_batch(16)
    model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(8), epochs=1, verbose=0)
    path = str(tmp_path / "cgan.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config() and loaded.get_config()["spectral_norm"] is True
    np.testing.assert_array_equal(loaded.discriminate(images, labels), model.discriminate(images, labels))
    for a, b in zip(model.discriminator.weights, loaded.discriminator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the power-iteration vectors too


# ---------------------------------------------------------------------------
# two time-scale learning rates


def test_d_lr_multiplier_sets_the_discriminators_rate():
    model = build("gan", d_lr_multiplier=4.0)
    defaults = model.compile_defaults(1e-3)
    assert float(defaults["d_optimizer"].learning_rate) == pytest.approx(4e-3)
    assert float(defaults["g_optimizer"].learning_rate) == pytest.approx(1e-3)
    model.compile()  # the default rates, 2e-4 for G
    assert float(model.d_optimizer.learning_rate) == pytest.approx(8e-4)
    assert float(model.g_optimizer.learning_rate) == pytest.approx(2e-4)
    wgan = build("dcgan", loss="wasserstein_gp", d_lr_multiplier=3.0).compile_defaults()
    assert float(wgan["d_optimizer"].learning_rate) == pytest.approx(3e-4)
    assert float(wgan["g_optimizer"].learning_rate) == pytest.approx(1e-4)
    assert float(wgan["d_optimizer"].beta_1) == 0.0  # the loss's Adam otherwise
    same = build("gan").compile_defaults(1e-3)  # default: one rate for both
    assert float(same["d_optimizer"].learning_rate) == float(same["g_optimizer"].learning_rate)


# ---------------------------------------------------------------------------
# DiffAugment in the GAN family


@pytest.fixture
def spy(monkeypatch):
    """Records (policy, seed) of every augment.apply call."""
    calls = []
    apply = augment.apply

    def recording(x, policy, seed):
        calls.append((tuple(policy), tuple(np.asarray(seed))))
        return apply(x, policy, seed)

    monkeypatch.setattr(augment, "apply", recording)
    return calls


def test_real_and_fake_get_the_same_policy_with_independent_draws(spy):
    model = sgd(build("dcgan", augment="translation,cutout"))
    images, _ = real_batch()
    policy = ("translation", "cutout")
    model.discriminator_step(images, seed=SEED)
    assert [p for p, _ in spy] == [policy, policy] and spy[0][1] != spy[1][1]
    spy.clear()
    model.simultaneous_step(images, seed=SEED)
    assert [p for p, _ in spy] == [policy, policy] and spy[0][1] != spy[1][1]
    spy.clear()
    model.generator_step(8, seed=SEED)
    assert [p for p, _ in spy] == [policy]  # G's fakes as D sees them
    spy.clear()
    model.generate(4)
    model.discriminate(images)
    model.adversarial_losses(images, seed=SEED)
    assert spy == []  # samples, D's probabilities and the evaluation losses are not augmented
    off = sgd(build("dcgan"))
    x = tf.zeros([2, *SHAPE])
    assert off._augment(x, SEED, gan.AUG_REAL) is x
    off.simultaneous_step(images, seed=SEED)
    assert spy == []


def test_generate_is_never_augmented():
    plain, augmented = build("gan"), build("gan", augment="translation,cutout")
    augmented.set_weights(plain.get_weights())
    z = tf.random.stateless_normal([4, 8], [1, 1])
    np.testing.assert_array_equal(plain.generate(z), augmented.generate(z))


@pytest.mark.parametrize("name", ["dcgan", "cgan"])
def test_simultaneous_step_differentiates_through_the_augmentation(name):
    """With augment, D moves by -lr grad d_loss(D(T(x)), D(T(G(z)))) and G by
    -lr grad g_loss(D(T(G(z)))): G's gradient passes through T."""
    policy = "translation,cutout"
    model = sgd(build(name, augment=policy, update="simultaneous"))
    images, labels = real_batch()
    labels = labels if model.conditional else None
    cond = model.condition(labels)
    z = base.replica_normal(8, model.latent_dim, SEED)
    d_vars, g_vars = model.discriminator.trainable_variables, model.generator.trainable_variables
    real = augment.apply(base.to_tanh(images), policy, fold(SEED, gan.AUG_REAL))
    with tf.GradientTape(persistent=True) as tape:
        fake = augment.apply(model._fake(z, cond, True), policy, fold(SEED, gan.AUG_FAKE))
        real_logits, fake_logits = model._d_logits(real, cond, True), model._d_logits(fake, cond, True)
        d_loss = tf.reduce_mean(model.d_loss_fn(real_logits, fake_logits, model.config.real_target))
        g_loss = tf.reduce_mean(model.g_loss_fn(fake_logits))
    g_grads = tape.gradient(g_loss, g_vars)
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(d_vars, tape.gradient(d_loss, d_vars))]
    expected += [v.numpy() - 0.1 * g.numpy() for v, g in zip(g_vars, g_grads)]
    assert max(float(tf.reduce_max(tf.abs(g))) for g in g_grads) > 1e-4
    model.simultaneous_step(images, labels, seed=SEED)
    for v, e in zip(d_vars + g_vars, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-5)


def test_generator_step_differentiates_through_the_augmentation():
    policy = "cutout"
    model = sgd(build("gan", augment=policy))
    z = base.replica_normal(8, model.latent_dim, SEED)
    g_vars = model.generator.trainable_variables
    with tf.GradientTape() as tape:
        fake = augment.apply(model._fake(z, None, True), policy, fold(SEED, gan.AUG_FAKE))
        loss = tf.reduce_mean(model.g_loss_fn(model._d_logits(fake, None, True)))
    grads = tape.gradient(loss, g_vars)
    with tf.GradientTape() as tape:  # the same step without the augmentation
        plain = tf.reduce_mean(model.g_loss_fn(model._d_logits(model._fake(z, None, True), None, True)))
    plain_grads = tape.gradient(plain, g_vars)
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(g_vars, grads)]
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads, plain_grads)) > 1e-5
    model.generator_step(8, seed=SEED)
    for v, e in zip(g_vars, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-6)


def test_fit_with_every_lever():
    model = build("dcgan", loss="hinge", r1_weight=1.0, spectral_norm=True, d_lr_multiplier=2.0,
                  augment="translation,cutout,color", d_steps=2)
    model.compile(**model.compile_defaults())
    images, _ = real_batch(32)
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    assert int(model.d_optimizer.iterations) == 16 and int(model.g_optimizer.iterations) == 8


# ---------------------------------------------------------------------------
# BiGAN's augment


def test_bigan_augments_both_pairs_images_and_encodes_the_plain_x():
    policy = "translation,cutout"
    keras.utils.set_random_seed(0)
    model = zoo.build("bigan", image_shape=SHAPE, latent_dim=6, d_dropout=0.0, augment=policy)
    images, _ = real_batch()
    real, fake = model.logits(images, SEED, training=True, augmented=True)
    x = base.to_tanh(images)
    z = base.replica_normal(8, 6, SEED)
    expected_real = model.discriminator(
        [augment.apply(x, policy, fold(SEED, bigan._AUG_REAL)), model.encoder(x, training=True)], training=True
    )
    expected_fake = model.discriminator(
        [augment.apply(model.generator(z, training=True), policy, fold(SEED, bigan._AUG_FAKE)), z], training=True
    )
    np.testing.assert_allclose(real, expected_real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake, expected_fake, rtol=1e-5, atol=1e-6)
    plain_real, _ = model.logits(images, SEED, training=True)  # evaluation: no augmentation
    assert np.max(np.abs(plain_real.numpy() - real.numpy())) > 1e-5
    # G's gradient passes through T(G(z)).
    with tf.GradientTape() as tape:
        _, fake = model.logits(images, SEED, training=True, augmented=True)
        loss = tf.reduce_mean(losses.non_saturating_generator_loss(fake))
    grads = tape.gradient(loss, model.generator.trainable_variables)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 1e-6


@pytest.mark.parametrize("name, net", [("dcgan", "conv"), ("gan", "mlp"), ("bigan", "conv")])
def test_width_scales_every_hidden_layer_of_g_and_d(name, net):
    def sizes(model):
        return [layer.kernel.shape[-1] for sub in (model.generator, model.discriminator)
                for layer in sub.layers if hasattr(layer, "kernel") and layer.name not in ("out", "logit")]

    full = zoo.build(name, image_shape=(28, 28, 1), net=net, width=1.0)
    half = zoo.build(name, image_shape=(28, 28, 1), net=net, width=0.5)
    for f, h in zip(sizes(full), sizes(half)):
        # hidden layers halve; layers whose size is the data's (the last ConvT's C, a reshape to pixels) keep it
        assert h == f // 2 or (h == f and f in (1, 28 * 28)), (sizes(full), sizes(half))
    assert sum(h < f for f, h in zip(sizes(full), sizes(half))) >= 3
    assert half.generate(2).shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="width must be > 0"):
        zoo.build(name, image_shape=(28, 28, 1), net=net, width=0.0)


def test_dcgan_runs_saved_before_width_ema_and_d_hidden_load_as_they_were_trained():
    config = zoo.build("dcgan", image_shape=(28, 28, 1)).get_config()
    assert config["width"] == 0.5 and config["ema_decay"] == 0.999 and config["d_hidden"] == 512  # today's defaults
    old = {k: v for k, v in config.items() if k not in ("width", "ema_decay", "d_hidden")}
    restored = zoo.get("dcgan").from_config(old)
    assert restored.config.width == 1.0 and restored.config.ema_decay == 0.0 and restored.config.d_hidden == 0
    assert not any(layer.name == "d_hidden" for layer in restored.discriminator.layers)


# cgan's concat D joins y through a hidden layer of its own (Dense + LeakyReLU): d_hidden comes after it
@pytest.mark.parametrize("name, before", [("dcgan", keras.layers.Flatten), ("cgan", keras.layers.LeakyReLU)])
def test_d_hidden_puts_one_dense_layer_between_the_conv_features_and_the_logit(name, before):
    extra = {"conditioning": "concat"} if name == "cgan" else {}
    plain, hidden = (zoo.build(name, image_shape=(28, 28, 1), net="conv", width=0.5, d_hidden=units, **extra)
                     for units in (0, 512))
    assert isinstance(hidden.discriminator.get_layer("d_hidden").input._keras_history.operation, before)
    layer = hidden.discriminator.get_layer("d_hidden")
    assert layer.units == 256  # 512 at width 0.5
    # it reads what the logit read without it, and the logit reads it
    fed = layer.input.shape[-1]
    assert fed == plain.discriminator.get_layer("logit").input.shape[-1]
    assert hidden.discriminator.get_layer("logit").input.shape[-1] == 256
    added = hidden.discriminator.count_params() - plain.discriminator.count_params()
    assert added == fed * 256 + 256 + 256 * 1 - fed * 1  # new kernel and bias; the logit now reads 256
    assert not any(l.name == "d_hidden" for l in plain.discriminator.layers)
    images = tf.random.uniform([3, 28, 28, 1])
    labels = tf.constant([0, 1, 2]) if name == "cgan" else None
    d = hidden.discriminate(images, labels)
    assert d.shape == (3,) and bool(tf.reduce_all((d > 0) & (d < 1)))
    assert hidden.generate(2, labels=1 if name == "cgan" else None).shape == (2, 28, 28, 1)


def test_d_hidden_is_the_mlp_discriminators_last_hidden_layer_too():
    plain, hidden = (zoo.build("dcgan", image_shape=(28, 28, 1), net="mlp", width=1.0, d_hidden=units)
                     for units in (0, 64))
    assert hidden.discriminator.get_layer("d_hidden").units == 64
    assert hidden.discriminator.get_layer("logit").input.shape[-1] == 64
    fed = plain.discriminator.get_layer("logit").input.shape[-1]  # the mlp's last hidden layer, 256 units
    assert hidden.discriminator.count_params() - plain.discriminator.count_params() == fed * 64 + 64 + 64 - fed


def test_d_hidden_output_is_the_features_the_projection_and_infogans_q_head_read():
    """The layer's output is phi(x): the projection discriminator's class
    embedding has its size, and InfoGAN's Q head reads it."""
    cgan = zoo.build("cgan", image_shape=(28, 28, 1), net="conv", conditioning="projection", width=0.5, d_hidden=128)
    assert cgan.discriminator.get_layer("class_embedding").units == 64
    d = cgan.discriminate(tf.random.uniform([2, 28, 28, 1]), tf.constant([0, 3]))
    assert d.shape == (2,)
    infogan = zoo.build("infogan", image_shape=(28, 28, 1), net="conv", d_hidden=48)
    assert infogan.q_head.input.shape[-1] == 48
    assert infogan.discriminator.outputs[1].shape[-1] == 48


def test_d_hidden_refuses_what_it_cannot_build():
    for bad in (-1, 1.5, True, float("inf")):
        with pytest.raises(ValueError, match="d_hidden must be an integer >= 0"):
            zoo.build("dcgan", image_shape=(28, 28, 1), d_hidden=bad)
