"""Likelihoods that are likelihoods: the continuous Bernoulli is a density on
[0, 1] and the Bernoulli pmf on grey levels is not; dynamic binarisation; and
train.evaluate naming every bound for what it bounds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from train import data, evaluate
from zoo import distributions

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
    by_hand = float(np.mean(model.iwae_bound(scored, k=8, seed=tf.constant([0, 1])).numpy()))
    assert figures["iwae"] == pytest.approx(by_hand, rel=1e-5)
    assert figures["iwae"] <= 0.0  # log of a pmf
