"""Latent samplers fitted to training codes (zoo/samplers.py): the exact
N(0, I) -> mixture transform, the fits, every encoder model's generate, and
.keras, checkpoint, SavedModel and train.run carrying the fitted parameters."""


import numpy as np
import pytest
import tensorflow as tf
from scipy.special import ndtr, ndtri

import keras
import zoo
from conftest import small_options
from export import saved_model
from zoo import samplers

LATENT = 3

# A known mixture: unequal weights, separated means, correlated components.
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
SCALES = np.array([[[1.0, 0.0], [0.5, 0.8]], [[0.6, 0.0], [-0.3, 1.2]], [[1.5, 0.0], [0.0, 0.4]]])


def nearest_component(z):
    return np.argmin(((z[:, None] - MEANS) ** 2).sum(-1), axis=1)


def test_mixture_transform_of_standard_normals_samples_the_mixture():
    eps = tf.random.stateless_normal([20000, 2], [1, 2])
    z = samplers.mixture_transform(eps, WEIGHTS, MEANS, SCALES).numpy()
    np.testing.assert_array_equal(z, samplers.mixture_transform(eps, WEIGHTS, MEANS, SCALES).numpy())
    # the documented formula in numpy: k by Phi(eps_0) against the cumulative weights, eps_0 reused
    e = eps.numpy().astype(np.float64)
    u = ndtr(e[:, 0])
    k = np.searchsorted(np.cumsum(WEIGHTS), u, side="right")
    e[:, 0] = ndtri(np.clip((u - (np.cumsum(WEIGHTS) - WEIGHTS)[k]) / WEIGHTS[k], 1e-6, 1 - 1e-6))
    np.testing.assert_allclose(z, MEANS[k] + np.einsum("nij,nj->ni", SCALES[k], e), atol=1e-4)
    # and the samples follow the mixture: component frequencies, moments, whitened N(0, I)
    np.testing.assert_allclose(np.bincount(nearest_component(z), minlength=3) / len(z), WEIGHTS, atol=0.02)
    for c in range(3):
        zc = z[k == c]
        np.testing.assert_allclose(zc.mean(0), MEANS[c], atol=0.05)
        np.testing.assert_allclose(np.cov(zc.T), SCALES[c] @ SCALES[c].T, atol=0.08)
        white = np.linalg.solve(SCALES[c], (zc - MEANS[c]).T).T
        np.testing.assert_allclose(white.mean(0), 0.0, atol=0.05)
        np.testing.assert_allclose(white.std(0), 1.0, atol=0.05)
        np.testing.assert_allclose(np.corrcoef(white.T)[0, 1], 0.0, atol=0.05)


def test_gaussian_transform_and_fits_match_numpy():
    rng = np.random.RandomState(0)
    codes = rng.randn(3000, 2) @ SCALES[0].T + MEANS[0]
    mean, scale = samplers.fit_gaussian(codes)
    np.testing.assert_allclose(mean, codes.mean(0), rtol=1e-10)
    np.testing.assert_allclose(scale @ scale.T, np.cov(codes.T, bias=True) + samplers.JITTER * np.eye(2), rtol=1e-8)
    eps = tf.random.stateless_normal([20000, 2], [3, 4])
    z = samplers.gaussian_transform(eps, tf.constant(mean, tf.float32), tf.constant(scale, tf.float32)).numpy()
    np.testing.assert_allclose(z, mean + eps.numpy() @ scale.T, rtol=1e-5, atol=1e-5)
    # EM recovers a known mixture from its samples
    k = rng.choice(3, size=6000, p=WEIGHTS)
    codes = MEANS[k] + np.einsum("nij,nj->ni", SCALES[k], rng.randn(6000, 2))
    weights, means, scales = samplers.fit_gmm(codes, 3, seed=0)
    order = [int(np.argmin(((means - m) ** 2).sum(1))) for m in MEANS]
    np.testing.assert_allclose(weights[order], WEIGHTS, atol=0.02)
    np.testing.assert_allclose(means[order], MEANS, atol=0.1)
    np.testing.assert_allclose(np.tril(scales), scales)  # Cholesky factors
    with pytest.raises(ValueError, match="at least 10 codes"):
        samplers.fit_gmm(codes[:5], 10)


def build(name, **config):
    keras.utils.set_random_seed(0)
    config = {"sampler_components": 4, **config}
    options = small_options(name, latent_dim=LATENT, net="mlp")  # ssaae: a style of LATENT beside its 10 classes
    model = zoo.build(name, image_shape=(8, 8, 1), num_classes=10, **{**options, **config})
    model.compile(**model.compile_defaults())
    return model


MODELS = zoo.names("fitted_sampler")


@pytest.mark.parametrize("name", MODELS)
def test_every_encoder_model_generates_from_the_fitted_samplers(name, digits):
    # one fit to all codes here (cvae's per-class fits: the next test)
    model = build(name, sampler="gmm", **({"sampler_per_class": False} if name == "cvae" else {}))
    z = tf.random.stateless_normal([6, model.latent_dim], [5, 6])
    labels = np.arange(6, dtype=np.int32)
    with pytest.raises(ValueError, match="call model.fit_sampler"):
        model.generate(z, labels=labels, sampler="gaussian")
    # until fitted, the configured default falls back to the prior (sample grids during training)
    np.testing.assert_array_equal(model.generate(z, labels=labels).numpy(),
                                  model.generate(z, labels=labels, sampler="prior").numpy())
    codes = model.fit_sampler(digits.train_images[:600], digits.train_labels[:600])
    assert codes.shape == (600, model.latent_dim) and float(model.sampler_fitted.numpy()) == 1.0
    np.testing.assert_allclose(codes, model.encode(digits.train_images[:600], digits.train_labels[:600]), atol=1e-5)
    mean, scale = samplers.fit_gaussian(codes)
    np.testing.assert_allclose(model.gaussian_mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(model.gaussian_scale.numpy(), scale, atol=1e-5)
    assert model.gmm_weights.shape == (4,) and model.gmm_scales.shape == (4, model.latent_dim, model.latent_dim)
    np.testing.assert_allclose(model.gmm_weights.numpy().sum(), 1.0, atol=1e-5)
    expected = {
        "gaussian": model.decode(mean.astype(np.float32) + z.numpy() @ scale.T.astype(np.float32), labels),
        "gmm": model.decode(samplers.mixture_transform(z, model.gmm_weights, model.gmm_means, model.gmm_scales),
                            labels),
        "prior": model.decode(model.prior_codes(z, labels), labels),
    }
    for sampler, images in expected.items():
        np.testing.assert_allclose(model.generate(z, labels=labels, sampler=sampler).numpy(), images.numpy(),
                                   atol=1e-5)
    np.testing.assert_array_equal(model.generate(z, labels=labels).numpy(),  # the config's default
                                  model.generate(z, labels=labels, sampler="gmm").numpy())
    with pytest.raises(ValueError, match="choose one of: prior, gaussian, gmm"):
        model.generate(z, labels=labels, sampler="kde")


def test_cvae_fits_its_samplers_per_class_and_draws_the_asked_class(digits):
    model = build("cvae")
    assert model.config.sampler == "gmm" and model.config.sampler_per_class
    images, labels = digits.train_images[:600], digits.train_labels[:600]
    codes = model.fit_sampler(images, labels)
    assert model.gmm_weights.shape == (10, 4) and model.gmm_scales.shape == (10, 4, LATENT, LATENT)
    for c in (0, 7):
        mean, scale = samplers.fit_gaussian(codes[labels == c])
        np.testing.assert_allclose(model.gaussian_mean.numpy()[c], mean, atol=1e-5)
        np.testing.assert_allclose(model.gaussian_scale.numpy()[c], scale, atol=1e-5)
    # each row from its own class's fit, as the one-fit transforms of that class give it
    eps = tf.random.stateless_normal([12, LATENT], [1, 2])
    asked = np.array([0, 7, 7, 3, 9, 0, 1, 2, 3, 4, 5, 6], np.int32)
    expected = np.concatenate([
        samplers.mixture_transform(eps[i : i + 1], model.gmm_weights[c], model.gmm_means[c], model.gmm_scales[c])
        for i, c in enumerate(asked)])
    np.testing.assert_allclose(model.sample_codes(eps, asked), expected, atol=1e-5)
    gaussian = model.gaussian_mean.numpy()[asked] + np.einsum("bij,bj->bi", model.gaussian_scale.numpy()[asked], eps)
    np.testing.assert_allclose(model.sample_codes(eps, asked, sampler="gaussian"), gaussian, atol=1e-5)
    np.testing.assert_allclose(model.generate(eps, labels=asked), model.decode(expected, asked), atol=1e-5)
    # many draws of one class: near that class's codes, not the others'
    draws = model.sample_codes(tf.random.stateless_normal([2000, LATENT], [3, 4]), np.full(2000, 7, np.int32))
    np.testing.assert_allclose(draws.numpy().mean(0), codes[labels == 7].mean(0), atol=0.15 * codes.std())
    with pytest.raises(ValueError, match="at least 4 codes, got 1 of class 0"):
        model.fit_sampler(images[:12], labels[:12])
    with pytest.raises(ValueError, match="per class: pass the training labels"):
        model.fit_sampler(images)


def test_bad_sampler_options_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of: prior, gaussian, gmm"):
        build("ae", sampler="kde")
    with pytest.raises(ValueError, match="sampler_components must be >= 1"):
        build("vae", sampler_components=0)


@pytest.fixture(scope="module")
def fitted_vae(digits):
    model = build("vae", sampler="gmm", prior="gmm")
    model.fit(tf.data.Dataset.from_tensor_slices(digits.train_images[:512]).batch(64), epochs=1, verbose=0)
    model.fit_sampler(digits.train_images, batch_size=500)
    return model


def test_refitted_keeps_every_weight_but_the_mixture(fitted_vae, digits):
    """train.evaluate --sampler_components: a copy with K Gaussians fitted to
    the same codes, every other weight (networks, learned prior) as trained."""
    copy = samplers.refitted(fitted_vae, digits.train_images, components=6, seed=3)
    assert copy.config.sampler_components == 6 and copy.seed == 3 and copy.gmm_weights.shape == (6,)
    images = digits.test_images[:8]
    np.testing.assert_array_equal(copy.encode(images).numpy(), fitted_vae.encode(images).numpy())
    z = tf.random.stateless_normal([5, LATENT], [1, 1])
    np.testing.assert_array_equal(copy.generate(z, sampler="prior").numpy(), fitted_vae.generate(z, sampler="prior").numpy())
    weights, means, scales = samplers.fit_gmm(fitted_vae.encode_all(digits.train_images), 6, seed=3)
    np.testing.assert_allclose(copy.gmm_means.numpy(), means, atol=1e-4)
    np.testing.assert_allclose(copy.gmm_weights.numpy(), weights, atol=1e-5)
    assert fitted_vae.gmm_weights.shape == (4,)  # the model itself is untouched


def test_keras_file_and_checkpoint_keep_the_fitted_sampler(fitted_vae, tmp_path):
    model = fitted_vae
    z = tf.random.stateless_normal([8, LATENT], [7, 8])
    path = str(tmp_path / "vae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for name in ("sampler_fitted", "gaussian_mean", "gaussian_scale", "gmm_weights", "gmm_means", "gmm_scales"):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(model, name).numpy())
    np.testing.assert_array_equal(loaded.generate(z).numpy(), model.generate(z).numpy())
    fresh = build("vae", sampler="gmm", prior="gmm")
    saved = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=fresh).read(saved).expect_partial()  # (the optimizer's slots are not built yet)
    np.testing.assert_array_equal(fresh.gmm_scales.numpy(), model.gmm_scales.numpy())
    np.testing.assert_array_equal(fresh.generate(z).numpy(), model.generate(z).numpy())


def test_export_serves_the_fitted_gmm(fitted_vae, tmp_path):
    model = fitted_vae
    path = saved_model.export(model, str(tmp_path), "vae")  # verified against the in-memory model
    z = tf.random.stateless_normal([16, LATENT], [9, 10])
    served = tf.saved_model.load(path).signatures["generate"](z=z)["images"].numpy()
    np.testing.assert_allclose(served, model.generate(z).numpy(), atol=1e-5)
    np.testing.assert_allclose(served, model.generate(z, sampler="gmm").numpy(), atol=1e-5)
    assert np.abs(served - model.generate(z, sampler="prior").numpy()).max() > 1e-3  # the gmm, not p(z)


def test_train_run_fits_the_sampler_it_saves_and_exports(train_run, tmp_path):
    workdir, base = tmp_path / "w", tmp_path / "serving"
    proc = train_run("--model=vae", "--sampler=gmm", "--sampler_components=3", "--net=mlp",
                      f"--latent_dim={LATENT}", "--dataset=digits", "--epochs=1", "--steps_per_epoch=4",
                      "--batch_size=32", "--verbose=0", f"--workdir={workdir}", f"--export_base={base}",
                      "--mixed_precision=off")  # float32: compared to 1e-5 below
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = keras.models.load_model(str(workdir / "model.keras"))
    assert model.config.sampler == "gmm" and float(model.sampler_fitted.numpy()) == 1.0
    weights = model.gmm_weights.numpy()
    assert weights.shape == (3,) and abs(weights.sum() - 1) < 1e-5 and np.ptp(weights) > 1e-3  # fitted, not 1/3
    z = tf.random.stateless_normal([8, LATENT], [11, 12])
    expected = model.decode(samplers.mixture_transform(z, weights, model.gmm_means, model.gmm_scales)).numpy()
    np.testing.assert_allclose(model.generate(z).numpy(), expected, atol=1e-5)
    served = tf.saved_model.load(str(base / "vae" / "1")).signatures["generate"](z=z)["images"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # the last grid is redrawn after the fit: it shows what generate gives, not the prior
    from PIL import Image
    from train import callbacks

    z, _ = model.sample_inputs(64, seed=0)
    grid = callbacks.image_grid(model.generate(z).numpy())
    saved = np.asarray(Image.open(workdir / "samples" / "epoch_0001.png"))
    scale = saved.shape[0] // grid.shape[0]
    np.testing.assert_allclose(saved[::scale, ::scale].astype(int), grid[..., 0].astype(int), atol=1)


def test_a_failed_refit_falls_back_to_the_prior_not_to_an_older_fit(digits):
    model = zoo.build("ae", image_shape=digits.image_shape, latent_dim=2, net="mlp", sampler="gmm",
                      sampler_components=3)
    assert model.try_fit_sampler(digits.train_images[:50]) is None
    assert float(model.sampler_fitted.numpy()) == 1.0
    error = model.try_fit_sampler(digits.train_images[:2])  # 2 codes cannot fit 3 components
    assert error and "at least 3 codes" in error
    assert float(model.sampler_fitted.numpy()) == 0.0
    eps = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    np.testing.assert_allclose(model.sample_codes(eps), model.prior_codes(eps), rtol=1e-6)
