"""KL warm-up and free bits of the VAE: their formulas, and that training sees them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import distributions


def posterior(mu, sigma):
    return distributions.tfd().MultivariateNormalDiag(loc=np.float32(mu), scale_diag=np.float32(sigma))


def test_kl_per_dimension_sums_to_the_analytic_kl():
    mu, sigma = [[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]], [[1.0, 0.5, 2.0], [0.1, 1.0, 0.3]]
    q = posterior(mu, sigma)
    per_dim = distributions.kl_per_dimension(q).numpy()
    closed = 0.5 * (np.square(mu) + np.square(sigma) - 1 - np.log(np.square(sigma)))
    np.testing.assert_allclose(per_dim, closed, rtol=1e-5, atol=1e-6)
    total = distributions.kl_to_prior(q, distributions.standard_normal_prior(3)).numpy()
    np.testing.assert_allclose(per_dim.sum(1), total, rtol=1e-5)


def test_free_bits_clamp_each_dimension_from_below():
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=3, net="mlp", free_bits=0.6)
    mu, sigma = [[0.0, 1.0, -2.0]], [[1.0, 1.0, 1.0]]  # KL_j = 0, 0.5, 2
    q = posterior(mu, sigma)
    kl = distributions.kl_to_prior(q, distributions.standard_normal_prior(3))
    np.testing.assert_allclose(model.kl_objective(q, kl).numpy(), [0.6 + 0.6 + 2.0], rtol=1e-5)
    # a dimension below lambda gets no gradient; one above gets the KL's
    loc = tf.Variable(np.float32(mu))
    with tf.GradientTape() as tape:
        q = distributions.tfd().MultivariateNormalDiag(loc=loc, scale_diag=np.float32(sigma))
        value = model.kl_objective(q, distributions.kl_to_prior(q, distributions.standard_normal_prior(3)))
    np.testing.assert_allclose(tape.gradient(value, loc).numpy(), [[0.0, 0.0, -2.0]], atol=1e-6)
    plain = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=3, net="mlp")
    np.testing.assert_allclose(plain.kl_objective(q, kl).numpy(), kl.numpy())


def test_free_bits_on_the_total_for_the_banded_and_recurrent_latents_and_not_with_a_gmm_prior():
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=3, net="mlp", free_bits=1.0, posterior="banded")
    q = posterior([[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(model.kl_objective(q, tf.constant([2.0])).numpy(), [3.0])
    np.testing.assert_allclose(model.kl_objective(q, tf.constant([5.0])).numpy(), [5.0])
    # the recurrent prior's KL is analytic too: free bits on the total
    recurrent = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=3, net="mlp", free_bits=1.0,
                          posterior="recurrent", prior="recurrent")
    np.testing.assert_allclose(recurrent.kl_objective(q, tf.constant([2.0])).numpy(), [3.0])
    with pytest.raises(ValueError, match="free_bits needs an analytic KL"):
        zoo.build("vae", image_shape=(8, 8, 1), free_bits=1.0, prior="gmm")


def test_kl_weight_rises_linearly_to_one():
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", kl_warmup_steps=4)
    weights = [float(model.kl_weight(tf.constant(t, tf.int64))) for t in range(6)]
    np.testing.assert_allclose(weights, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    plain = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp")
    assert float(plain.kl_weight(tf.constant(0, tf.int64))) == 1.0


def test_warmup_step_is_the_gradient_of_the_weighted_objective():
    """The first train step with kl_warmup_steps=10 is an SGD step on rec + 0.1 KL (beta_0 = 1/10), at the same z."""
    images = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    warm = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", kl_warmup_steps=10, seed=1)
    plain = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", seed=1)
    plain.set_weights(warm.get_weights())
    for model in (warm, plain):
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    with tf.GradientTape() as tape:
        q = plain.posterior(images)
        z = plain.posterior_sample(q, plain._step_seed())
        rec = -plain.likelihood(z).log_prob(images)
        loss = tf.reduce_mean(rec + 0.1 * plain.kl(q, z))
    grads = tape.gradient(loss, plain.trainable_variables)
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(plain.trainable_variables, grads)]
    warm.train_on_batch(images)
    for got, want, start in zip(warm.trainable_variables, expected, plain.trainable_variables):
        assert np.abs(want - start.numpy()).max() > 0 or got.shape == ()
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_negative_options_are_refused():
    with pytest.raises(ValueError, match="free_bits"):
        zoo.build("vae", image_shape=(8, 8, 1), free_bits=-1.0)
    with pytest.raises(ValueError, match="kl_warmup_steps"):
        zoo.build("cvae", image_shape=(8, 8, 1), kl_warmup_steps=-5)
