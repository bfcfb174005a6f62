import numpy as np
import pytest
import tensorflow as tf
import keras

import zoo
from conftest import run_mirrored_check
from zoo import distributions
from train import data


def test_kl_is_the_closed_form():
    mu = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]], np.float32)
    sigma = np.array([[1.0, 0.5, 2.0], [0.1, 1.0, 0.3]], np.float32)
    q = distributions.tfd().MultivariateNormalDiag(loc=mu, scale_diag=sigma)
    kl = distributions.kl_to_prior(q, distributions.standard_normal_prior(3)).numpy()
    closed = -0.5 * np.sum(1 + np.log(sigma**2) - mu**2 - sigma**2, axis=1)
    np.testing.assert_allclose(kl, closed, rtol=1e-5)


def test_gaussian_likelihood_is_the_normal_density():
    out = np.zeros((1, 2, 2, 1), np.float32)  # means sigmoid(0) = 0.5
    x = np.full((1, 2, 2, 1), 0.7, np.float32)
    lp = distributions.likelihood("gaussian", out, np.log(np.array([0.1], np.float32))).log_prob(x).numpy()
    scale = 0.1 + distributions.MIN_SCALE
    closed = 4 * (-0.5 * np.log(2 * np.pi * scale**2) - 0.5 * (0.2 / scale) ** 2)
    np.testing.assert_allclose(lp, [closed], rtol=1e-5)


def negative_elbo(model, images, n_draws=5):
    values = [
        tf.reduce_mean(tf.add_n(model.elbo_terms(images, seed=tf.constant([i, 7])))).numpy()
        for i in range(n_draws)
    ]
    return float(np.mean(values))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_training_lowers_the_negative_elbo_on_digits(digits, likelihood):
    keras.utils.set_random_seed(1)
    model = zoo.build("vae", image_shape=digits.image_shape, latent_dim=4, net="mlp",
                      likelihood=likelihood, learn_scale=True)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    before = negative_elbo(model, digits.test_images)
    ds = data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat()
    history = model.fit(ds, epochs=1, steps_per_epoch=300, verbose=0)
    after = negative_elbo(model, digits.test_images)
    assert after < before - 5.0, (before, after)
    assert np.isfinite(history.history["loss"][-1])
    if likelihood == "gaussian":  # the learned scale moved off its start value
        assert not np.allclose(model.log_scale.numpy(), np.log(0.1))


def test_cvae_draws_the_asked_digit(digits):
    keras.utils.set_random_seed(2)
    model = zoo.build("cvae", image_shape=digits.image_shape, num_classes=10, latent_dim=4, net="mlp")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    ds = data.pipeline(digits.train_images, digits.train_labels, 64, seed=0).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=300, verbose=0)
    means = np.stack([digits.train_images[digits.train_labels == k].mean(0) for k in range(10)])
    z = tf.random.stateless_normal([100, 4], [0, 1])
    labels = np.repeat(np.arange(10), 10).astype(np.int32)
    images = model.generate(z, labels=labels).numpy()
    # Same z, different label: different images, each nearest the asked digit's mean image.
    dist = ((images[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    accuracy = (dist.argmin(1) == labels).mean()
    assert accuracy > 0.7, accuracy
    assert np.abs(images[labels == 0] - images[labels == 1]).mean() > 0.05


def test_conditional_model_requires_labels(digits):
    model = zoo.build("cvae", image_shape=digits.image_shape, latent_dim=4, net="mlp")
    with pytest.raises(ValueError, match="labels"):
        model.generate(3)


@pytest.mark.parametrize("name", ["ae", "vae", "cvae"])
def test_keras_round_trip_gives_identical_outputs(tmp_path, digits, name):
    model = zoo.build(name, image_shape=digits.image_shape, latent_dim=4)
    model.compile(**model.compile_defaults())
    ds = data.pipeline(digits.train_images[:256], digits.train_labels[:256], 64)
    model.fit(ds, epochs=1, verbose=0)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    z = tf.random.stateless_normal([5, 4], [3, 4])
    labels = tf.constant([0, 1, 2, 3, 4])
    x = digits.test_images[:5]
    for method, arg in (("generate", z), ("decode", z), ("encode", x), ("reconstruct", x)):
        a = getattr(model, method)(arg, labels=labels)
        b = getattr(loaded, method)(arg, labels=labels)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.get_config() == model.get_config()


def test_ae_generates_from_the_gaussian_of_its_codes(digits):
    keras.utils.set_random_seed(3)
    model = zoo.build("ae", image_shape=digits.image_shape, latent_dim=3, net="mlp", code_momentum=0.9)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    ds = data.pipeline(digits.train_images, digits.train_labels, 128, seed=0).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=200, verbose=0)
    codes = model.encode(digits.train_images).numpy()
    np.testing.assert_allclose(model.code_mean.numpy(), codes.mean(0), atol=0.15 * codes.std(0).max())
    np.testing.assert_allclose(model.code_cov.numpy(), np.cov(codes.T), atol=0.2 * np.cov(codes.T).max())
    # generate(eps) decodes m + L eps
    eps = tf.random.stateless_normal([4, 3], [0, 0])
    z = model.code_mean + tf.linalg.matvec(model.code_scale(), eps)
    np.testing.assert_allclose(model.generate(eps).numpy(), model.decode(z).numpy(), atol=1e-6)


def test_unknown_option_and_bad_shape_are_clear_errors():
    with pytest.raises(ValueError, match="valid options: latent_dim"):
        zoo.build("vae", image_shape=(28, 28, 1), latent_dims=3)
    with pytest.raises(ValueError, match="use net=mlp"):
        zoo.build("vae", image_shape=(27, 27, 1), net="conv")
    with pytest.raises(ValueError, match="valid models"):
        zoo.build("vea")
    with pytest.raises(ValueError, match="choose one of: bernoulli, continuous_bernoulli, gaussian"):
        zoo.build("vae", likelihood="poisson")


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1), (32, 32, 3)])
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_nets_take_every_dataset_shape(shape, net):
    model = zoo.build("cvae", image_shape=shape, latent_dim=4, net=net)
    x = np.random.rand(2, *shape).astype(np.float32)
    assert model.reconstruct(x, labels=[1, 2]).shape == (2, *shape)
    assert model.generate(2, labels=[1, 2]).shape == (2, *shape)


def test_iwae_bound_converges_to_the_exact_log_likelihood_of_a_linear_gaussian_model():
    # p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I)  =>  p(x) = N(b, W W^T + s^2 I) exactly.
    tfd = distributions.tfd()
    rng = np.random.RandomState(0)
    w = rng.randn(5, 2).astype(np.float32)
    b = rng.randn(5).astype(np.float32)
    s = 0.5
    x = rng.randn(4, 5).astype(np.float32)
    exact = tfd.MultivariateNormalFullCovariance(b, w @ w.T + s**2 * np.eye(5, dtype=np.float32)).log_prob(x).numpy()
    # q(z|x): the exact posterior's mean, a too-wide scale (so the bound is loose at K=1)
    prec = np.eye(2) + w.T @ w / s**2
    mean = ((x - b) @ w / s**2) @ np.linalg.inv(prec).T
    q = tfd.MultivariateNormalDiag(mean.astype(np.float32), np.full((4, 2), 1.5, np.float32))

    def log_joint(z):
        return (tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2)).log_prob(z)
                + tfd.MultivariateNormalDiag(tf.einsum("ij,kbj->kbi", w, z) + b, s * tf.ones(5)).log_prob(x))

    bounds = [np.mean([distributions.importance_weighted_bound(q, log_joint, k, seed=[i, k]).numpy()
                       for i in range(20)], axis=0) for k in (1, 10, 100, 5000)]
    gaps = [float(np.mean(exact - bnd)) for bnd in bounds]
    assert all(g >= -0.02 for g in gaps), gaps  # a lower bound (within Monte Carlo error)
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps  # tighter as K grows
    assert gaps[3] < 0.05 and gaps[0] > 0.5, gaps  # and converging to log p(x)


def test_vae_iwae_bound_is_non_decreasing_in_k(digits):
    keras.utils.set_random_seed(4)
    model = zoo.build("vae", image_shape=digits.image_shape, latent_dim=4, net="mlp")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(data.pipeline(digits.train_images, digits.train_labels, 64).repeat(), epochs=1,
              steps_per_epoch=100, verbose=0)
    x = digits.test_images[:50]
    bounds = [float(np.mean([model.iwae_bound(x, k=k, seed=[i, k]).numpy().mean() for i in range(5)]))
              for k in (1, 8, 64)]
    elbo = -float(np.mean([tf.add_n(model.elbo_terms(x, seed=[i, 9])).numpy().mean() for i in range(20)]))
    assert abs(bounds[0] - elbo) < 0.5, (bounds[0], elbo)  # K = 1 is the ELBO
    assert bounds[0] < bounds[1] < bounds[2], bounds


def test_autoencoders_mirrored_strategy_matches_one_device():
    """2 replicas on a global batch make the update one device makes on it
    (tests/mirrored_check.py: the AE; the VAE, whose eps is each replica's slice
    of one draw; the CVAE with the banded posterior, the gmm prior and the
    discretised logistic likelihood; the VAE with binarize=dynamic, whose pixel
    draws are cut alike, and the recurrent posterior and learned prior; the VAE
    trained on the IWAE bound, whose K draws per example are cut alike). Their
    losses sum 64 pixels per example, so float32 rounding reaches ~2e-5: the bar
    is relative to how far the steps moved the weights, far below the factor-2
    error of a mean over one replica's half batch."""
    cases = ("ae", "vae", "cvae_banded_gmm_dlogistic", "vae_binarized_recurrent", "vae_iwae")
    result = run_mirrored_check(*cases)
    assert set(result) == set(cases)
    for name, r in result.items():
        assert r["moved"] > 1e-3, (name, r)
        assert r["max_diff"] < 1e-3 * r["moved"], (name, r)
