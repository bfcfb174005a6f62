"""The VAE's banded and recurrent posteriors and learned mixture and recurrent
priors: the maths against numpy closed forms and dense Gaussians, the Monte
Carlo KL against the analytic one, and training."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import zoo
from train import data
from zoo import base, distributions

tfd = distributions.tfd()
J = 4


def softplus(x):
    return np.log1p(np.exp(x))


def numpy_banded_scale(params):
    """L from params [B, 3J - 1] built entry by entry, independently of the TF code."""
    j = (params.shape[-1] + 1) // 3
    scale = np.zeros((len(params), j, j))
    for b, row in enumerate(params.astype(np.float64)):
        for i in range(j):
            scale[b, i, i] = softplus(row[j + i]) + distributions.MIN_SCALE
        for i in range(j - 1):
            scale[b, i + 1, i] = row[2 * j + i]
    return scale


def random_params(batch=3, j=J, seed=0):
    return np.random.RandomState(seed).randn(batch, 3 * j - 1).astype(np.float32)


def negative_elbo(model, images, n_draws=5):
    return float(np.mean([tf.reduce_mean(tf.add_n(model.elbo_terms(images, seed=[i, 7]))).numpy()
                          for i in range(n_draws)]))


# -- the banded posterior ------------------------------------------------------


def test_banded_scale_is_lower_bidiagonal_and_the_covariance_tridiagonal():
    params = random_params()
    scale = distributions.banded_scale(params).numpy()
    np.testing.assert_allclose(scale, numpy_banded_scale(params), rtol=1e-5, atol=1e-6)
    i, j = np.indices((J, J))
    assert np.all(scale[:, (i - j != 0) & (i - j != 1)] == 0.0)  # only the diagonal and first sub-diagonal
    assert np.all(np.diagonal(scale, axis1=1, axis2=2) > 0)
    q = distributions.banded_posterior(params)
    cov = q.covariance().numpy()
    np.testing.assert_allclose(cov, scale @ scale.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    assert np.all(cov[:, np.abs(i - j) > 1] == 0.0) and np.all(cov[:, np.abs(i - j) == 1] != 0.0)
    np.testing.assert_allclose(q.mean().numpy(), params[:, :J])


def test_banded_kl_is_the_closed_form():
    params = random_params(batch=5, seed=1)
    q = distributions.banded_posterior(params)
    kl = distributions.kl_to_prior(q, distributions.standard_normal_prior(J)).numpy()
    scale = numpy_banded_scale(params)
    mu = params[:, :J].astype(np.float64)
    sigma = scale @ scale.transpose(0, 2, 1)
    closed = 0.5 * (np.trace(sigma, axis1=1, axis2=2) + np.sum(mu**2, 1) - J - np.linalg.slogdet(sigma)[1])
    np.testing.assert_allclose(kl, closed, rtol=1e-4)


def test_banded_posterior_samples_have_its_covariance_with_a_none_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 3 * J - 1], tf.float32)])
    def draw(params):
        return distributions.banded_posterior(params).sample(20000, seed=[3, 4])  # [N, B, J]

    params = random_params(batch=1, seed=2)
    z = draw(params).numpy()[:, 0]
    scale = numpy_banded_scale(params)[0]
    np.testing.assert_allclose(np.cov(z.T), scale @ scale.T, atol=0.06 * np.abs(scale @ scale.T).max())
    np.testing.assert_allclose(z.mean(0), params[0, :J], atol=0.05)


def test_encoder_outputs_per_posterior():
    assert distributions.posterior_size("diagonal", J) == 2 * J
    assert distributions.posterior_size("banded", J) == distributions.posterior_size("recurrent", J) == 3 * J - 1
    model = zoo.build("cvae", image_shape=(8, 8, 1), latent_dim=J, net="mlp", posterior="banded")
    assert model.encoder.output_shape[-1] == 3 * J - 1
    q = model.posterior(np.zeros((2, 8, 8, 1), np.float32), labels=[0, 1])
    assert isinstance(q, tfd.MultivariateNormalTriL) and q.event_shape == [J]
    with pytest.raises(ValueError, match="choose one of: diagonal, banded, recurrent"):
        zoo.build("vae", posterior="full")
    with pytest.raises(ValueError, match="choose one of: normal, gmm, recurrent"):
        zoo.build("vae", prior="laplace")


def test_vae_with_banded_posterior_trains(digits):
    keras.utils.set_random_seed(5)
    model = zoo.build("vae", image_shape=digits.image_shape, latent_dim=J, net="mlp", posterior="banded")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    before = negative_elbo(model, digits.test_images)
    model.fit(data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat(), epochs=1,
              steps_per_epoch=150, verbose=0)
    after = negative_elbo(model, digits.test_images)
    assert after < before - 5.0, (before, after)
    # the sub-diagonal is used: codes of trained examples have correlated posteriors
    q = model.posterior(digits.test_images[:50])
    assert np.abs(np.diagonal(q.scale.to_dense().numpy(), offset=-1, axis1=1, axis2=2)).mean() > 1e-3


# -- the recurrent ("diagonal + 1") Gaussian ------------------------------------


def numpy_recurrent(params):
    """(mu, s, a, B) of the recurrent Gaussian from params [B, 3J - 1], in float64:
    B (z - mu) = S e, B unit lower bidiagonal with B_{i,i-1} = -a_i."""
    params = params.astype(np.float64)
    j = (params.shape[-1] + 1) // 3
    mu, raw, a = params[:, :j], params[:, j : 2 * j], params[:, 2 * j :]
    b = np.stack([np.eye(j) - np.diag(row, k=-1) for row in a])
    return mu, softplus(raw) + distributions.MIN_SCALE, a, b


def dense_gaussian(params):
    """N(mu, B^-1 S^2 B^-T) as a dense tfd Gaussian (float64), and its precision B^T S^-2 B."""
    mu, s, _, b = numpy_recurrent(params)
    b_inv = np.linalg.inv(b)
    cov = b_inv @ (s[:, :, None] ** 2 * b_inv.transpose(0, 2, 1))
    precision = b.transpose(0, 2, 1) @ (b / s[:, :, None] ** 2)
    return tfd.MultivariateNormalFullCovariance(mu, cov), precision


def test_recurrent_gaussian_is_the_dense_gaussian_of_its_matrices():
    params = random_params(batch=3, seed=7)
    q = distributions.recurrent_posterior(params)
    dense, precision = dense_gaussian(params)
    cov = q.covariance().numpy()
    np.testing.assert_allclose(cov, dense.covariance().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.inv(cov), precision, rtol=1e-3, atol=1e-3)
    i, j = np.indices((J, J))
    assert np.all(precision[:, np.abs(i - j) > 1] == 0.0) and np.all(precision[:, np.abs(i - j) == 1] != 0.0)
    assert np.all(np.abs(cov[:, np.abs(i - j) > 1]) > 1e-4)  # the covariance is not banded
    z = np.random.RandomState(8).randn(5, 3, J).astype(np.float32)
    np.testing.assert_allclose(q.log_prob(z).numpy(), dense.log_prob(z.astype(np.float64)).numpy(), rtol=1e-5)
    _, s, _, _ = numpy_recurrent(params)
    np.testing.assert_allclose(q.scale.log_abs_determinant().numpy(), np.log(s).sum(1), rtol=1e-6)
    np.testing.assert_allclose(q.stddev().numpy(), np.sqrt(np.diagonal(cov, axis1=1, axis2=2)), rtol=1e-5)


def test_recurrent_samples_follow_the_recursion():
    params = random_params(batch=3, seed=9)
    mu, s, a, _ = numpy_recurrent(params)
    e = np.random.RandomState(10).randn(3, J)
    expected = np.zeros_like(e)
    expected[:, 0] = mu[:, 0] + s[:, 0] * e[:, 0]
    for i in range(1, J):
        expected[:, i] = mu[:, i] + a[:, i - 1] * (expected[:, i - 1] - mu[:, i - 1]) + s[:, i] * e[:, i]
    q = distributions.recurrent_posterior(params)
    np.testing.assert_allclose(q.bijector.forward(e.astype(np.float32)).numpy(), expected, rtol=1e-5, atol=1e-5)
    # the VAE's reparameterised draw is the same map of the step's eps
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=J, net="mlp", posterior="recurrent")
    eps = base.replica_normal(3, J, tf.constant([1, 2], tf.int64))
    np.testing.assert_allclose(model.posterior_sample(q, tf.constant([1, 2], tf.int64)).numpy(),
                               q.loc + q.scale.matvec(eps), rtol=1e-6)


def test_recurrent_kls_are_those_of_the_dense_gaussians():
    params = random_params(batch=3, seed=11)
    q = distributions.recurrent_posterior(params)
    dense_q, _ = dense_gaussian(params)
    kl = distributions.kl_to_prior(q, distributions.standard_normal_prior(J)).numpy()
    unit = tfd.MultivariateNormalFullCovariance(np.zeros(J), np.eye(J))
    np.testing.assert_allclose(kl, tfd.kl_divergence(dense_q, unit).numpy(), rtol=1e-4)
    prior_params = 0.5 * random_params(batch=1, seed=12)[0]  # one prior for every row, as the VAE's
    p = distributions.recurrent_gaussian(*distributions.split_bidiagonal(prior_params))
    dense_p, _ = dense_gaussian(prior_params[None])
    expected = tfd.kl_divergence(dense_q, dense_p).numpy()
    np.testing.assert_allclose(distributions.kl_to_prior(q, p).numpy(), expected, rtol=1e-4)
    # and the diagonal and banded posteriors against the recurrent prior
    banded = distributions.banded_posterior(params)
    dense_banded = tfd.MultivariateNormalFullCovariance(params[:, :J].astype(np.float64),
                                                        banded.covariance().numpy().astype(np.float64))
    np.testing.assert_allclose(distributions.kl_to_prior(banded, p).numpy(),
                               tfd.kl_divergence(dense_banded, dense_p).numpy(), rtol=1e-4)


@pytest.mark.parametrize("posterior", ["banded", "recurrent"])
def test_one_latent_has_gradients_with_the_bidiagonal_posteriors(posterior):
    # J = 1: no sub-diagonal (the gradient of tf.linalg.diag(k=-1) fails on 1 x 1)
    params = tf.Variable(random_params(batch=2, j=1, seed=14))
    prior = distributions.recurrent_gaussian(tf.zeros([1]), tf.zeros([1]), tf.zeros([0]))
    with tf.GradientTape() as tape:
        q = distributions.posterior(posterior, params)
        z = q.bijector.forward(tf.ones([2, 1]))
        loss = tf.reduce_sum(distributions.kl_to_prior(q, prior) - q.log_prob(z))
    grad = tape.gradient(loss, params).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).min() > 0, grad


def recurrent_vae(seed=13):
    keras.utils.set_random_seed(seed)
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=J, net="mlp", posterior="recurrent",
                      prior="recurrent")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    return model


@pytest.fixture(scope="module")
def trained_recurrent_vae(digits):
    model = recurrent_vae()
    prior_weights = (model.prior_loc, model.prior_raw_scales, model.prior_coefficients)
    start = [w.numpy().copy() for w in prior_weights]
    before = negative_elbo(model, digits.test_images)
    model.fit(data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat(), epochs=1,
              steps_per_epoch=50, verbose=0)
    return model, start, before


def test_vae_with_recurrent_posterior_and_prior_trains(trained_recurrent_vae, digits):
    model, start, before = trained_recurrent_vae
    after = negative_elbo(model, digits.test_images)
    assert after < before - 5.0, (before, after)
    for initial, weight in zip(start, (model.prior_loc, model.prior_raw_scales, model.prior_coefficients)):
        assert np.abs(weight.numpy() - initial).max() > 1e-3, weight.name
    x = digits.test_images[:8]
    q, p = model.posterior(x), model.prior()
    assert isinstance(q, tfd.MultivariateNormalLinearOperator) and isinstance(p, tfd.MultivariateNormalLinearOperator)
    for seed in ([1, 2], [3, 4]):  # the KL is analytic, independent of the sample
        np.testing.assert_allclose(model.elbo_terms(x, seed=seed)[1].numpy(), tfd.kl_divergence(q, p).numpy(),
                                   rtol=1e-5)
    # sampler=prior decodes the prior's recursion of eps
    eps = tf.random.stateless_normal([3, J], [5, 6])
    z = p.loc + p.scale.matvec(eps)
    np.testing.assert_allclose(model.prior_codes(eps).numpy(), z.numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.generate(eps, sampler="prior").numpy(), model.decode(z).numpy(), atol=1e-6)


def test_recurrent_prior_survives_a_keras_round_trip(trained_recurrent_vae, tmp_path, digits):
    model, *_ = trained_recurrent_vae
    path = str(tmp_path / "vae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    for name in ("prior_loc", "prior_raw_scales", "prior_coefficients"):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(model, name).numpy())
    z = tf.random.stateless_normal([6, J], [7, 8])
    np.testing.assert_array_equal(loaded.prior().log_prob(z).numpy(), model.prior().log_prob(z).numpy())
    x = digits.test_images[:4]
    np.testing.assert_array_equal(loaded.iwae_bound(x, k=4, seed=[1, 1]).numpy(),
                                  model.iwae_bound(x, k=4, seed=[1, 1]).numpy())


# -- the mixture prior ---------------------------------------------------------


def test_mixture_prior_density_is_the_closed_form():
    rng = np.random.RandomState(3)
    logits, means, raw = rng.randn(2), rng.randn(2, 3), rng.randn(2, 3)
    z = rng.randn(6, 3)
    p = distributions.mixture_prior(*(tf.constant(a, tf.float32) for a in (logits, means, raw)))
    pi = np.exp(logits) / np.exp(logits).sum()
    sigma = softplus(raw) + distributions.MIN_SCALE
    log_normal = -0.5 * np.sum(((z[:, None] - means) / sigma) ** 2 + np.log(2 * np.pi * sigma**2), axis=-1)
    closed = np.log(np.sum(pi * np.exp(log_normal), axis=1))
    np.testing.assert_allclose(p.log_prob(z.astype(np.float32)).numpy(), closed, rtol=1e-5)


@pytest.mark.parametrize("posterior", ["diagonal", "banded"])
def test_monte_carlo_kl_averages_to_the_analytic_kl(posterior):
    # A one-component mixture equal to N(0, I): the MC estimate must average to tfd's analytic KL.
    unit = np.log(np.expm1(1.0 - distributions.MIN_SCALE))
    mixture = distributions.mixture_prior(tf.zeros([1]), tf.zeros([1, J]), tf.fill([1, J], float(unit)))
    params = random_params(batch=2, seed=4)
    params = params if posterior == "banded" else params[:, : 2 * J]
    q = distributions.posterior(posterior, 0.5 * params)
    z = q.sample(100000, seed=[5, 6])  # [N, 2, J]
    estimate = distributions.monte_carlo_kl(q, mixture, z).numpy()
    analytic = distributions.kl_to_prior(q, distributions.standard_normal_prior(J)).numpy()
    standard_error = estimate.std(0) / np.sqrt(len(estimate))
    assert np.all(np.abs(estimate.mean(0) - analytic) < 4 * standard_error + 1e-3), (estimate.mean(0), analytic)


def gmm_vae(seed=6, **config):
    keras.utils.set_random_seed(seed)
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=J, net="mlp", prior="gmm", prior_components=3,
                      **config)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    return model


def test_gmm_prior_starts_as_documented_and_its_kl_is_the_sample_estimate(digits):
    model = gmm_vae()
    assert len(model.trainable_weights) == len(model.encoder.trainable_weights) + len(
        model.decoder.trainable_weights) + 3
    p = model.prior()
    np.testing.assert_allclose(p.mixture_distribution.probs_parameter().numpy(), np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(p.components_distribution.stddev().numpy(), np.ones((3, J)), rtol=1e-5)
    means = model.prior_means.numpy()
    assert np.abs(means[0] - means[1]).max() > 0.1  # the components start apart
    x = digits.test_images[:8]
    q = model.posterior(x)
    z = model.posterior_sample(q, seed=tf.constant([1, 2], tf.int64))  # the z elbo_terms draws with that seed
    np.testing.assert_allclose(model.kl(q, z).numpy(), (q.log_prob(z) - p.log_prob(z)).numpy(), rtol=1e-6)
    # elbo_terms' KL is evaluated at the same z as the reconstruction term
    reconstruction, kl = model.elbo_terms(x, seed=[1, 2])
    np.testing.assert_allclose(kl.numpy(), model.kl(q, z).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reconstruction.numpy(), -model.likelihood(z).log_prob(x).numpy(), rtol=1e-5)


def test_normal_prior_kl_stays_analytic(digits):
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=J, net="mlp")
    q = model.posterior(digits.test_images[:8])
    analytic = distributions.kl_to_prior(q, distributions.standard_normal_prior(J)).numpy()
    for seed in ([1, 2], [3, 4]):  # independent of the sample
        np.testing.assert_array_equal(model.elbo_terms(digits.test_images[:8], seed=seed)[1].numpy(), analytic)


@pytest.fixture(scope="module")
def trained_gmm_vae(digits):
    model = gmm_vae(posterior="banded")
    start = [w.numpy().copy() for w in (model.prior_logits, model.prior_means, model.prior_raw_scales)]
    before = negative_elbo(model, digits.test_images)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.add_n(model.elbo_terms(digits.train_images[:64], seed=[0, 0])))
    grads = tape.gradient(loss, [model.prior_logits, model.prior_means, model.prior_raw_scales])
    model.fit(data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat(), epochs=1,
              steps_per_epoch=150, verbose=0)
    return model, start, grads, before


def test_gmm_prior_weights_get_gradients_and_train(trained_gmm_vae, digits):
    model, start, grads, before = trained_gmm_vae
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)
    for initial, weight in zip(start, (model.prior_logits, model.prior_means, model.prior_raw_scales)):
        assert np.abs(weight.numpy() - initial).max() > 1e-3, weight.name
    after = negative_elbo(model, digits.test_images)
    assert after < before - 5.0, (before, after)


def test_iwae_bound_uses_the_gmm_prior(trained_gmm_vae, digits):
    model, *_ = trained_gmm_vae
    x = digits.test_images[:50]
    bounds = [float(np.mean([model.iwae_bound(x, k=k, seed=[i, k]).numpy().mean() for i in range(5)]))
              for k in (1, 8, 64)]
    elbo = -float(np.mean([tf.add_n(model.elbo_terms(x, seed=[i, 9])).numpy().mean() for i in range(20)]))
    assert np.isfinite(bounds).all()
    assert abs(bounds[0] - elbo) < 0.5, (bounds[0], elbo)  # K = 1 is the ELBO, whose KL uses the mixture
    assert bounds[0] < bounds[1] < bounds[2], bounds


def test_generate_from_the_gmm_prior_samples_the_mixture(trained_gmm_vae):
    model, *_ = trained_gmm_vae
    eps = tf.random.stateless_normal([20000, J], [7, 8])
    z = model.prior_codes(eps).numpy()
    p = model.prior()
    np.testing.assert_allclose(z.mean(0), p.mean().numpy(), atol=0.05)
    np.testing.assert_allclose(np.cov(z.T), p.covariance().numpy(), atol=0.1)
    np.testing.assert_allclose(model.generate(eps[:5]).numpy(), model.decode(z[:5]).numpy(), atol=1e-6)


def test_banded_cvae_with_gmm_prior_exports_and_serves_its_posterior(tmp_path):
    """The switches together in a SavedModel (verified in a fresh process by the
    export): encode serves the banded posterior's mean and marginal stddevs."""
    from export import saved_model

    model = zoo.build("cvae", image_shape=(8, 8, 1), num_classes=3, net="mlp", latent_dim=4,
                      posterior="banded", prior="gmm", prior_components=3)
    path = saved_model.export(model, str(tmp_path), "cvae")
    images = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1], np.int32)
    served = tf.saved_model.load(path).signatures["encode"](images=images, labels=labels)
    q = model.posterior(images, labels)
    np.testing.assert_allclose(served["z"].numpy(), q.mean().numpy(), atol=1e-5)
    np.testing.assert_allclose(served["z_stddev"].numpy(), q.stddev().numpy(), atol=1e-5)
    cov = q.covariance().numpy()
    assert np.abs(cov[:, 0, 2]).max() == 0.0 and np.abs(cov[:, 0, 1]).max() > 0.0  # tridiagonal, not diagonal
