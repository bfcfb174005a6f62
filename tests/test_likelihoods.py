"""Likelihoods that are likelihoods: the continuous Bernoulli is a density on
[0, 1] and the Bernoulli pmf on grey levels is not; the discretised logistic is
a pmf over the 256 levels of 8-bit grey, scored in bits per dimension; dynamic
binarisation; and train.evaluate naming every bound for what it bounds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from train import data, evaluate
from zoo import distributions, metrics

GRID = np.linspace(0.0, 1.0, 20001, dtype=np.float64)[:, None, None, None]  # x in [0, 1] as one-pixel images


def integral(kind, logit):
    """int_0^1 p(x | logit) dx of a one-pixel likelihood, by the trapezoidal rule."""
    outputs = tf.fill([len(GRID), 1, 1, 1], tf.constant(logit, tf.float32))
    density = np.exp(distributions.likelihood(kind, outputs).log_prob(GRID.astype(np.float32)).numpy())
    return np.trapezoid(density, GRID[:, 0, 0, 0])


@pytest.mark.parametrize("logit", [-4.0, -0.3, 0.0, 1.0, 3.0])
def test_the_continuous_bernoulli_is_a_density_and_the_bernoulli_pmf_on_grey_levels_is_not(logit):
    assert integral("continuous_bernoulli", logit) == pytest.approx(1.0, abs=2e-4)
    p = 1.0 / (1.0 + np.exp(-logit))
    expected = 0.5 if logit == 0.0 else (2 * p - 1) / np.log(p / (1 - p))  # <= 1/2
    assert integral("bernoulli", logit) == pytest.approx(expected, rel=1e-4)
    assert integral("bernoulli", logit) <= 0.5 + 1e-6


@pytest.mark.parametrize("logit", [-3.0, 0.0, 0.5, 2.0])
def test_the_continuous_bernoulli_decodes_to_its_mean_not_lambda(logit):
    outputs = tf.constant([[[[logit]]]], tf.float32)
    mean = float(distributions.likelihood_mean(outputs, "continuous_bernoulli")[0, 0, 0, 0])
    density = np.exp(distributions.likelihood("continuous_bernoulli", tf.fill([len(GRID), 1, 1, 1], logit))
                     .log_prob(GRID.astype(np.float32)).numpy())
    assert mean == pytest.approx(np.trapezoid(GRID[:, 0, 0, 0] * density, GRID[:, 0, 0, 0]), abs=1e-4)
    if logit:
        assert abs(mean - 1.0 / (1.0 + np.exp(-logit))) > 0.02  # lambda is not the mean


def test_binarize_draws_bernoulli_pixels_of_the_grey_levels():
    images = tf.constant(np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, 8, 8, 1))
    draws = np.stack([distributions.binarize(images, tf.constant([s, 0], tf.int64)).numpy() for s in range(2000)])
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(0), images.numpy(), atol=0.04)  # 4 standard errors at p = 1/2
    assert draws[:, 0, 0, 0, 0].max() == 0.0 and draws[:, 0, 7, 7, 0].min() == 1.0  # grey 0 and 1 stay
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(distributions.binarize(images, seed), distributions.binarize(images, seed))


def test_a_binarized_step_fits_the_binarised_images_of_that_step(digits64):
    x, _ = digits64
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", binarize="dynamic", seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    seen = model.training_images(x).numpy()
    assert set(np.unique(seen)) == {0.0, 1.0}
    step_seed = model._step_seed()
    rec, kl = model.elbo_terms(seen, seed=step_seed)
    logs = model.train_step((x, np.zeros(len(x), np.int32)))
    np.testing.assert_allclose(float(logs["loss"]), float(tf.reduce_mean(rec + kl)), rtol=1e-5)
    assert not np.array_equal(model.training_images(x).numpy(), seen)  # the next step draws again
    with pytest.raises(ValueError, match="binarize=dynamic"):
        zoo.build("vae", image_shape=(8, 8, 1), binarize="dynamic", likelihood="continuous_bernoulli")


@pytest.mark.parametrize("name, options, names", [
    ("vae", {}, ("elbo_unnormalised", "iwae_unnormalised", None, "unnormalised")),
    ("vae", {"binarize": "dynamic"}, ("elbo", "iwae", "nll_nats", "binary")),
    ("vae", {"likelihood": "continuous_bernoulli"}, ("elbo", "iwae", None, "density")),
    ("vae", {"likelihood": "gaussian"}, ("elbo", "iwae", None, "density")),
    ("vae", {"likelihood": "discretized_logistic"}, ("elbo", "iwae", None, "discrete_8bit")),
    ("cvae", {"likelihood": "discretized_logistic"}, ("elbo_conditional", "iwae_conditional", None, "discrete_8bit")),
    ("cvae", {}, ("elbo_conditional_unnormalised", "iwae_conditional_unnormalised", None, "unnormalised")),
    ("cvae", {"binarize": "dynamic"}, ("elbo_conditional", "iwae_conditional", "nll_conditional_nats", "binary")),
])
def test_evaluate_names_every_bound_for_what_it_bounds(name, options, names):
    model = zoo.build(name, image_shape=(8, 8, 1), num_classes=10, latent_dim=2, net="mlp", **options)
    found = evaluate.bound_names(model)
    assert (found["elbo"], found["iwae"], found["nll"], model.bound_kind) == names


def test_likelihood_figures_score_the_fixed_binarised_test_split(digits):
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", binarize="dynamic", seed=1)
    small = data.Data("digits", digits.train_images, digits.train_labels, digits.test_images[:20],
                      digits.test_labels[:20], 10)
    scored = model.evaluation_images(small.test_images).numpy()
    assert set(np.unique(scored)) == {0.0, 1.0}
    np.testing.assert_array_equal(scored, model.evaluation_images(small.test_images).numpy())  # fixed
    figures = evaluate.likelihood_figures(model, small, iwae_k=8)
    assert figures["nll_nats"] == -figures["iwae"] and figures["iwae_k"] == 8 and figures["bound_kind"] == "binary"
    by_hand = model.iwae_bound(scored, k=8, seed=tf.constant([0, 1])).numpy()
    assert figures["iwae"] == pytest.approx(float(np.mean(by_hand)), rel=1e-5) and figures["iwae_images"] == 20
    assert figures["iwae"] <= 0.0  # log of a pmf
    # --iwae_images: the same binarised images, the first n of the split (the bound's draws depend on the batch)
    first = evaluate.likelihood_figures(model, small, iwae_k=8, iwae_images=5)
    assert first["iwae_images"] == 5
    assert first["iwae"] == pytest.approx(float(np.mean(model.iwae_bound(scored[:5], k=8, seed=tf.constant([0, 1])))), rel=1e-5)


def test_active_units_count_the_dimensions_whose_posterior_mean_varies_across_images(digits):
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=4, net="mlp", seed=1)
    out = model.encoder.get_layer("out").kernel  # columns 0..3: mu_j; 4..7: the scales
    # mu_0, mu_1, mu_2 the same for every image (their bias), mu_3 spread out
    out.assign(out.numpy() * np.array([0.0, 0.0, 0.0, 50.0, 1.0, 1.0, 1.0, 1.0], np.float32))
    small = data.Data("digits", digits.train_images, digits.train_labels, digits.test_images[:40],
                      digits.test_labels[:40], 10)
    assert evaluate.likelihood_figures(model, small, iwae_k=2)["active_units"] == 1
    codes = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 0.2, 0.05]  # variances 1, 0.04, 0.0025
    assert metrics.active_units(codes) == 2 and metrics.active_units(codes, threshold=0.001) == 3


LEVELS = np.arange(256) / 255.0  # the 8-bit grey levels k / 255


def pmf64(k, mu, s):
    """P(k / 255) of the discretised logistic in float64, straight from its definition:
    the logistic CDF at the bin's edges, the edge levels taking the tails; the
    difference is taken on the side of mu where it does not cancel."""
    def cdf(x):
        return 1.0 / (1.0 + np.exp(-(x - mu) / s))

    def survival(x):  # 1 - cdf(x), without cancelling
        return 1.0 / (1.0 + np.exp((x - mu) / s))

    upper, lower = (k + 0.5) / 255.0, (k - 0.5) / 255.0
    if k == 0:
        return cdf(upper)
    if k == 255:
        return survival(lower)
    return cdf(upper) - cdf(lower) if upper <= mu else survival(lower) - survival(upper)


def test_the_discretized_logistic_is_a_pmf_over_the_256_levels():
    # (mu, log s) pairs, extremes included: means past the edges, log s below the clamp (read as -8) and huge
    params = np.float32([(mu, log_s) for mu in (-3.0, 0.0, 0.37, 1.0, 2.0)
                         for log_s in (-12.0, -8.0, -4.0, -1.0, 3.0, 20.0)])
    outputs = np.repeat(params, 256, axis=0).reshape(-1, 1, 1, 2)  # each pair at each of the 256 levels
    images = np.tile(LEVELS.astype(np.float32), len(params)).reshape(-1, 1, 1, 1)
    log_p = distributions.likelihood("discretized_logistic", tf.constant(outputs)).log_prob(images).numpy()
    log_p = log_p.reshape(len(params), 256).astype(np.float64)
    assert np.isfinite(log_p).all() and (log_p <= 1e-6).all()
    np.testing.assert_allclose(np.exp(log_p).sum(1), 1.0, atol=2e-6)
    # and its decode is its exact mean, sum_k k / 255 P(k), which is not mu
    mean = distributions.likelihood_mean(tf.constant(params.reshape(-1, 1, 1, 2)), "discretized_logistic").numpy()
    np.testing.assert_allclose(mean.ravel(), np.exp(log_p) @ LEVELS, atol=2e-6)
    at_zero = mean.ravel()[(params[:, 0] == 0.0) & (params[:, 1] == -1.0)]  # mu = 0, s = 1/e: the tail pulls it in
    assert mean.min() >= 0.0 and mean.max() <= 1.0 and at_zero > 0.2, at_zero


def test_the_discretized_logistic_log_prob_is_the_float64_definition():
    rng = np.random.default_rng(0)
    cases = [(k, mu, log_s) for k in (0, 1, 17, 128, 254, 255) for mu in (-0.4, 0.0, 0.5, 0.999, 1.3)
             for log_s in (-7.5, -5.0, -2.0, 0.0)] + [(int(rng.integers(256)), rng.uniform(-0.5, 1.5),
                                                      rng.uniform(-7.9, 1.0)) for _ in range(200)]
    k, mu, log_s = (np.array(c) for c in zip(*cases))
    outputs = np.stack([mu, log_s], -1).astype(np.float32).reshape(-1, 1, 1, 2)
    mu32, s32 = outputs[:, 0, 0, 0].astype(np.float64), np.exp(outputs[:, 0, 0, 1].astype(np.float64))
    with np.errstate(over="ignore", divide="ignore"):  # far tails: exp overflows, P underflows to 0
        direct = np.log([pmf64(k_, m, s) for k_, m, s in zip(k, mu32, s32)])
    images = (k / 255.0).astype(np.float32).reshape(-1, 1, 1, 1)
    found = distributions.likelihood("discretized_logistic", tf.constant(outputs)).log_prob(images).numpy()
    fine = direct > -600  # float64's direct difference keeps its digits down to here
    assert fine.sum() > 200
    np.testing.assert_allclose(found[fine], direct[fine], rtol=2e-5, atol=2e-5)
    # a pixel off the grid is read as its nearest level
    nudged = images + np.float32(0.4 / 255.0) * (k < 255).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(
        distributions.likelihood("discretized_logistic", tf.constant(outputs)).log_prob(nudged).numpy(), found)


def test_bits_per_dimension_is_minus_the_bound_over_d_ln_2():
    assert distributions.bits_per_dimension(-3.0 * 784 * math.log(2.0), 784) == pytest.approx(3.0)
    # a uniform pmf over 256 levels is 8 bits per dimension
    assert distributions.bits_per_dimension(64 * math.log(1 / 256), 64) == pytest.approx(8.0)


def test_a_discretized_logistic_vae_trains_and_evaluate_reports_its_bits_per_dimension(digits):
    keras.utils.set_random_seed(1)
    model = zoo.build("vae", image_shape=(8, 8, 1), latent_dim=2, net="mlp", likelihood="discretized_logistic",
                      seed=1)
    assert model.decoder.output_shape == (None, 8, 8, 2)  # mu and log s per pixel
    small = data.Data("digits", digits.train_images, digits.train_labels, digits.test_images[:20],
                      digits.test_labels[:20], 10)
    scored = model.evaluation_images(small.test_images).numpy()
    np.testing.assert_array_equal(scored * 255, np.round(scored * 255))  # the 8x8 digits (k / 16) at levels k / 255
    before = evaluate.likelihood_figures(model, small, iwae_k=4)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat(), epochs=1,
              steps_per_epoch=20, verbose=0)
    after = evaluate.likelihood_figures(model, small, iwae_k=4)
    assert after["elbo"] > before["elbo"] + 15, (before, after)  # the loss, -ELBO, fell (nats per image)
    assert after["bound_kind"] == "discrete_8bit" and not {"nll_nats", "iwae_unnormalised"} & set(after)
    assert after["bpd"] == pytest.approx(-after["iwae"] / (64 * math.log(2.0)), rel=1e-6)
    assert after["elbo_bpd"] == pytest.approx(-after["elbo"] / (64 * math.log(2.0)), rel=1e-6)
    assert after["bpd"] < before["bpd"] - 0.3 and after["bpd"] <= after["elbo_bpd"] + 0.05, (before, after)
    images = model.decode(tf.zeros([3, 2])).numpy()
    assert images.shape == (3, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
