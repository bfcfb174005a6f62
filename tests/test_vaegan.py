"""VAE-GAN (zoo/vaegan.py): L_llike against its formula, each of the three
optimizers descending its own loss on its own network, the equilibrium
gating, a short training that lowers the feature-space reconstruction, and
MirroredStrategy equivalence. Tiny shapes, fixed seeds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import run_mirrored_check, unchanged, weights
from zoo import base, losses

SHAPE = (8, 8, 1)
LR = 0.05


def build(optimizer=lambda: keras.optimizers.SGD(LR), **config):
    keras.utils.set_random_seed(0)
    model = zoo.build("vaegan", image_shape=SHAPE, num_classes=0, **{"latent_dim": 4, "net": "mlp", **config})
    model.compile(**{name: optimizer() for name in model.optimizer_names})
    return model


def test_feature_reconstruction_loss_matches_its_formula():
    f = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    f_rec = np.array([[0.0, -1.0, 0.5], [3.0, 0.0, -4.0]], np.float32)
    expected = 0.5 * ((f - f_rec) ** 2).sum(1) + 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(losses.feature_reconstruction_loss(f, f_rec), expected, rtol=1e-6)
    # it is -log N(f | f_rec, I), the Gaussian's log density summed over the features
    import tensorflow_probability as tfp

    gaussian = tfp.distributions.Normal(f_rec, 1.0)
    np.testing.assert_allclose(losses.feature_reconstruction_loss(f, f_rec),
                               -tf.reduce_sum(gaussian.log_prob(f), 1), rtol=1e-6)
    # feature maps are flattened per example
    np.testing.assert_allclose(losses.feature_reconstruction_loss(f.reshape(2, 3, 1), f_rec.reshape(2, 1, 3)),
                               expected, rtol=1e-6)


def gradients(model, images, player):
    """Gradients of the global-batch mean of `player`'s loss, at the model's
    weights, with the noise of its next train step."""
    variables = model.optimizer_variables()[player + "_optimizer"]
    with tf.GradientTape() as tape:
        terms, _ = model.losses_of(images, model._seed(), training=True)
        loss = tf.reduce_mean(terms[player + "_loss"])
    return [g.numpy() for g in tape.gradient(loss, variables)]


def test_each_optimizer_descends_its_own_loss_on_its_own_network(digits64):
    """With SGD one train step moves Enc by -lr grad(L_prior + L_llike), Dec by
    -lr grad(gamma L_llike + GAN term) and Dis by -lr grad(its GAN loss), all at
    the weights of before the step: the encoder never sees the GAN term."""
    model = build(gamma=0.5)
    x = tf.constant(digits64[0][:16])
    nets = {"enc": model.encoder, "dec": model.decoder, "d": model.discriminator}
    expected = {}
    for player, net in nets.items():
        before = weights(net)
        expected[player] = [w - LR * g for w, g in zip(before, gradients(model, x, player))]
    # without the GAN term the encoder's gradient would differ: the test can tell
    with tf.GradientTape() as tape:
        terms, _ = model.losses_of(x, model._seed(), training=True)
        gan_term = terms["dec_loss"] - model.config.gamma * terms["feature_nll"]
        wrong = tf.reduce_mean(terms["enc_loss"] + gan_term)
    wrong_grads = tape.gradient(wrong, model.encoder.trainable_variables)
    assert max(float(np.max(np.abs(a - b))) for a, b in
               zip(gradients(model, x, "enc"), wrong_grads)) > 1e-4
    model.train_step(x)
    for player, net in nets.items():
        for got, want in zip(weights(net), expected[player]):
            np.testing.assert_allclose(got, want, atol=2e-6, err_msg=player)


def test_each_players_loss_is_its_formula(digits64):
    """From one pass's logits (real, reconstructed, sampled): D's loss is
    1/2 [d(x, x~) + d(x, x_p)], the decoder's gamma L_llike + 1/2 [g(x~) +
    g(x_p)], the encoder's KL + L_llike (non_saturating: d = -log D(x) -
    log(1 - D(fake)), g = -log D(fake))."""
    x = tf.constant(digits64[0][:16])
    seed = tf.constant([1, 2], tf.int64)
    model = build(gamma=0.3)
    terms, (real, rec, sampled) = model.losses_of(x, seed)
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731  -log sigmoid(-v)
    real, rec, sampled = (np.asarray(v, np.float64) for v in (real, rec, sampled))
    d_expected = softplus(-real) + 0.5 * (softplus(rec) + softplus(sampled))
    np.testing.assert_allclose(terms["d_loss"], d_expected, rtol=1e-5)
    dec_expected = 0.3 * np.asarray(terms["feature_nll"]) + 0.5 * (softplus(-rec) + softplus(-sampled))
    np.testing.assert_allclose(terms["dec_loss"], dec_expected, rtol=1e-5)
    np.testing.assert_allclose(terms["enc_loss"], terms["kl"] + terms["feature_nll"], rtol=1e-6)


def test_equilibrium_gates():
    model = build(equilibrium_margin=0.3)
    logit = lambda p: tf.fill([4], math.log(p / (1 - p)))  # noqa: E731
    half = logit(0.5)  # cross-entropies log 2 = 0.69: within 0.68 +- 0.3, both update
    assert [bool(g) for g in model.gates((half, half, half))] == [True, True]
    sure = logit(0.9)  # D right about real images (-log 0.9 = 0.11 < 0.38): D rests
    assert [bool(g) for g in model.gates((sure, -sure, -sure))] == [False, True]
    assert [bool(g) for g in model.gates((sure, half, half))] == [False, True]  # the real arm alone
    assert [bool(g) for g in model.gates((half, -sure, -sure))] == [False, True]  # the fakes' arm alone
    fooled = logit(0.2)  # -log 0.2 = 1.6 > 0.98: the decoder rests
    assert [bool(g) for g in model.gates((fooled, half, half))] == [True, False]
    # both would rest (real too easy, fakes too hard): both update
    assert [bool(g) for g in model.gates((sure, sure, sure))] == [True, True]
    assert [bool(g) for g in build().gates((sure, -sure, -sure))] == [True, True]  # margin 0: off


def test_a_gated_update_leaves_network_and_optimizer_state_alone(digits64):
    """margin 0.05: at the start this D's cross-entropy on real images is 0.62
    < 0.68 - 0.05 (and its fakes' 0.71, within the margin), so D rests, keeping
    its weights and its Adam state; r depends on D alone, so it rests again.
    Enc and Dec step."""
    model = build(optimizer=lambda: keras.optimizers.Adam(1e-4), equilibrium_margin=0.05)
    x = tf.constant(digits64[0][:16])
    dec, d, enc = weights(model.decoder), weights(model.discriminator), weights(model.encoder)
    step = tf.function(model.train_step)
    for _ in range(2):
        logs = step(x)
        assert float(logs["d_updated"]) == 0.0 and float(logs["dec_updated"]) == 1.0
    assert unchanged(d, model.discriminator)
    assert int(model.d_optimizer.iterations) == 0 and int(model.dec_optimizer.iterations) == 2
    assert all(float(tf.reduce_max(tf.abs(v))) == 0.0 for v in model.d_optimizer.variables[2:])  # moments
    assert not unchanged(dec, model.decoder) and not unchanged(enc, model.encoder)


def test_apply_if_restores_only_when_told():
    var = keras.Variable(np.ones(3, np.float32))
    opt = keras.optimizers.Adam(0.1)
    opt.build([var])
    grads = [tf.constant([1.0, -1.0, 2.0])]
    base.apply_if(opt, grads, [var], tf.constant(False))
    np.testing.assert_array_equal(var.numpy(), np.ones(3))
    assert int(opt.iterations) == 0
    base.apply_if(opt, grads, [var], tf.constant(True))
    np.testing.assert_allclose(var.numpy(), [0.9, 1.1, 0.9], rtol=1e-4)
    assert int(opt.iterations) == 1


def test_training_brings_reconstructions_closer_to_their_images(digits64):
    """30 Adam steps on 64 digits: though no loss reads pixels, matching Dis's
    features of x~ to those of x makes the reconstructions Dec(E[q(z|x)])
    closer to x in pixels (mean squared error 0.179 -> 0.109 here)."""
    model = build(optimizer=lambda: keras.optimizers.Adam(2e-3, beta_1=0.5), gamma=1.0, ema_decay=0.0)
    x = tf.constant(digits64[0])

    def pixel_error():
        return float(tf.reduce_mean(tf.square(model.reconstruct(x) - x)))

    before = pixel_error()
    step = tf.function(model.train_step)
    for _ in range(30):
        logs = step(x)
    assert np.isfinite([float(v) for v in logs.values()]).all()
    assert pixel_error() < 0.8 * before, (before, pixel_error())


def test_options_are_checked():
    with pytest.raises(ValueError, match="gamma and equilibrium_margin must be >= 0"):
        build(gamma=-1.0)
    with pytest.raises(ValueError, match="not valid|choose one of|valid"):
        build(loss="wasserstein_gp")
    with pytest.raises(ValueError, match="equilibrium_margin needs a loss whose D is a sigmoid"):
        build(loss="hinge", equilibrium_margin=0.3)


def test_mirrored_strategy_matches_one_device():
    """The posterior's eps and the prior's z are slices of global draws, every
    loss a global-batch mean, the gates all-reduced: 2 replicas make one
    device's update, with the gating on too (the decoder rests in both)."""
    result = run_mirrored_check("vaegan", "vaegan_gated")
    for case in ("vaegan", "vaegan_gated"):
        assert result[case]["moved"] > 1e-3 and result[case]["max_diff"] < 1e-5, result
