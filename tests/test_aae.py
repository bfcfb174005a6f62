"""The adversarial autoencoder: each of its three updates lowers its own loss and
touches only its own networks, the gmm prior, save/load, fit, serving
signatures, and MirroredStrategy equivalence."""


import io
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

import keras
from conftest import run_mirrored_check, unchanged, weights
import zoo
from zoo.aae import AAE, replica_randint

SHAPE = (8, 8, 1)


def build(**config):
    keras.utils.set_random_seed(0)
    model = zoo.build("aae", image_shape=SHAPE, num_classes=10, latent_dim=4, seed=1, **config)
    model.compile(
        ae_optimizer=keras.optimizers.Adam(1e-3),
        d_optimizer=keras.optimizers.Adam(1e-3),
        g_optimizer=keras.optimizers.Adam(1e-3),
    )
    return model


def test_registered():
    assert "aae" in zoo.names() and zoo.get("aae") is zoo.AAE
    assert zoo.default_config("aae")["prior"] == "normal"
    with pytest.raises(ValueError, match="use_labels"):
        zoo.build("aae", image_shape=SHAPE, use_labels=True)
    with pytest.raises(ValueError, match="prior"):
        zoo.build("aae", image_shape=SHAPE, prior="laplace")


def test_reconstruction_step_lowers_reconstruction_only(digits64):
    model = build()
    x, _ = digits64
    critic = weights(model.latent_discriminator)
    before = float(tf.reduce_mean(model.reconstruction_loss(x)))
    for _ in range(15):
        model.reconstruction_step(x)
    after = float(tf.reduce_mean(model.reconstruction_loss(x)))
    assert after < before - 1.0, (before, after)
    assert unchanged(critic, model.latent_discriminator)
    assert int(model.ae_optimizer.iterations) == 15 and int(model.d_optimizer.iterations) == 0


@pytest.mark.parametrize("prior", ["normal", "gmm"])
def test_discriminator_step_lowers_d_loss_only(digits64, prior):
    model = build(prior=prior)
    x, y = digits64
    encoder, decoder = weights(model.encoder), weights(model.decoder)
    seed = tf.constant([7, 7], tf.int64)
    before = float(tf.reduce_mean(model.discriminator_loss(x, y, seed)[0]))
    for _ in range(15):
        model.discriminator_step(x, y)
    loss, d_prior, d_code = model.discriminator_loss(x, y, seed)
    assert float(tf.reduce_mean(loss)) < before - 0.1, (before, float(tf.reduce_mean(loss)))
    assert float(tf.reduce_mean(d_prior)) > float(tf.reduce_mean(d_code))
    assert unchanged(encoder, model.encoder) and unchanged(decoder, model.decoder)


def test_generator_step_lowers_g_loss_only(digits64):
    model = build()
    x, y = digits64
    for _ in range(10):  # a D that tells codes from prior samples apart
        model.discriminator_step(x, y)
    critic, decoder = weights(model.latent_discriminator), weights(model.decoder)
    before = float(tf.reduce_mean(model.generator_loss(x, y)))
    for _ in range(10):
        model.generator_step(x, y)
    after = float(tf.reduce_mean(model.generator_loss(x, y)))
    assert after < before - 0.05, (before, after)
    assert unchanged(critic, model.latent_discriminator) and unchanged(decoder, model.decoder)


def test_gmm_prior():
    model = build(prior="gmm", use_labels=True, gmm_radius=4.0, gmm_std=0.1)
    means = model.component_means().numpy()
    assert means.shape == (10, 4)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 4.0, rtol=1e-5)
    assert not means[:, 2:].any()
    # Labelled rows come from their label's component; label -1 (unknown) from any.
    labels = tf.constant([3, 3, 7, -1] * 50)
    z = model.sample_prior(200, labels, tf.constant([0, 1], tf.int64)).numpy()
    nearest = np.argmin(((z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest.reshape(50, 4)[:, :3], [[3, 3, 7]] * 50)
    assert len(set(nearest.reshape(50, 4)[:, 3])) > 5
    # generate maps eps through the prior: k = labels, else row i -> component i mod K.
    eps = tf.zeros([12, 4])
    np.testing.assert_allclose(model.prior_transform(eps).numpy(), means[np.arange(12) % 10], atol=1e-6)
    np.testing.assert_allclose(
        model.generate(eps, labels=2).numpy(), model.decode(np.tile(means[2], (12, 1))).numpy(), atol=1e-6
    )
    # The latent discriminator sees the label one-hot with an "unlabelled" slot.
    assert model.latent_discriminator.input_shape == (None, 4 + 11)
    assert model.discriminate(tf.zeros([5, 4])).shape == (5,)


def test_replica_randint_outside_strategy_is_one_global_draw():
    seed = tf.constant([1, 2], tf.int64)
    draws = replica_randint(100, 10, seed).numpy()
    assert draws.shape == (100,) and draws.min() >= 0 and draws.max() < 10
    np.testing.assert_array_equal(draws, tf.random.stateless_uniform([100], seed, 0, 10, tf.int32))


def test_fit_tracks_every_loss(digits64):
    model = build(prior="gmm")
    x, y = digits64
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2, verbose=0)
    assert set(history.history) == {"reconstruction", "d_loss", "g_loss", "d_prior", "d_code"}
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert [int(o.iterations) for o in model.optimizer_list()] == [8, 8, 8]
    assert model.optimizer is model.ae_optimizer
    result = model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), verbose=0, return_dict=True)
    assert set(result) == set(history.history)


def test_compile_defaults_and_errors():
    model = zoo.build("aae", image_shape=SHAPE, latent_dim=4)
    model.compile(**model.compile_defaults(learning_rate=5e-4))
    assert [float(o.learning_rate) for o in model.optimizer_list()] == pytest.approx([5e-4, 1e-4, 1e-4])
    model.compile(d_optimizer=keras.optimizers.SGD(0.1))  # Adam defaults for the others
    assert float(model.ae_optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(model.g_optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(model.g_optimizer.beta_1) == pytest.approx(0.5)
    assert isinstance(model.d_optimizer, keras.optimizers.SGD)
    assert all(o.built for o in model.optimizer_list())
    model.compile(optimizer=keras.optimizers.SGD(0.5))  # another name for ae_optimizer
    assert model.optimizer is model.ae_optimizer and float(model.ae_optimizer.learning_rate) == 0.5


@pytest.mark.parametrize("loss", ["wasserstein_gp", "least_squares"])
def test_other_losses_fit(digits64, loss):
    model = build(loss=loss)
    x, y = digits64
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(digits64, policy):
    x, y = digits64
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build(prior="gmm", use_labels=True)
        history = model.fit(tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16), epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    scaled = policy == "mixed_float16"  # float16 needs loss scaling, bfloat16 does not
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) == scaled for o in model.optimizer_list())
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert model.encode(x[:2]).dtype == tf.float32 and model.reconstruct(x[:2]).dtype == tf.float32


def test_save_load_round_trip(digits64, tmp_path):
    model = build(prior="gmm", use_labels=True)
    x, y = digits64
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
    path = str(tmp_path / "aae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, AAE) and loaded.get_config() == model.get_config()
    z = tf.random.stateless_normal([6, 4], [0, 0])
    for fn, arg in [("encode", x), ("reconstruct", x), ("decode", z), ("generate", z), ("discriminate", z)]:
        np.testing.assert_array_equal(getattr(loaded, fn)(arg).numpy(), getattr(model, fn)(arg).numpy())
    for a, b in zip(model.optimizer_list(), loaded.optimizer_list()):
        assert type(a) is type(b) and int(b.iterations) == 2
        assert float(a.learning_rate) == pytest.approx(float(b.learning_rate))
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_array_equal(va.numpy(), vb.numpy())
    loaded.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)


def test_serving_signatures(digits64):
    model = build()
    x, _ = digits64
    signatures = model.serving_signatures()
    assert list(signatures) == ["generate", "encode", "decode", "reconstruct", "discriminate", "sample", "sample_png"]
    z = tf.zeros([3, 4])
    assert signatures["generate"](z)["images"].shape == (3, *SHAPE)
    assert signatures["encode"](x[:3])["z"].shape == (3, 4)
    assert signatures["decode"](z)["images"].shape == (3, *SHAPE)
    assert signatures["reconstruct"](x[:3])["images"].shape == (3, *SHAPE)
    probability = signatures["discriminate"](z)["probability"]
    assert probability.shape == (3,) and probability.dtype == tf.float32
    spec = signatures["discriminate"].get_concrete_function().structured_outputs["probability"]
    assert spec.shape.as_list() == [None]


def test_mirrored_strategy_matches_one_device():
    """2 replicas on a global batch make the updates one device makes on it
    (aae_ema: the normal prior, and the encoder's and decoder's moving averages;
    gmm prior with use_labels, whose component draws are cut per replica;
    ssaae, the semi-supervised AAE: its prior draws and labelled rows cut from
    global draws, four updates; in this process, to start one less)."""
    result = run_mirrored_check("aae_ema", "aae_gmm", "ssaae")
    assert set(result) == {"aae_ema", "aae_gmm", "ssaae"}
    for name, r in result.items():
        assert r["moved"] > 1e-3, (name, r)  # the steps did change the weights
        assert r["max_diff"] < 1e-5, (name, r)


def test_runs_saved_before_the_rename_keep_loading(tmp_path):
    """The latent discriminator was the attribute `critic`: .keras files and
    checkpoints of earlier runs hold it under that key, which the alias keeps
    in every save (so their keys are still matched on load)."""
    model = zoo.build("aae", image_shape=(8, 8, 1), latent_dim=4, net="mlp")
    assert model.critic is model.latent_discriminator
    assert [layer.name for layer in model.layers].count("critic") == 1  # one network, two names
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    model_node = graph.nodes[next(c.node_id for c in graph.nodes[0].children if c.local_name == "model")]
    edges = {c.local_name: c.node_id for c in model_node.children}
    assert edges["critic"] == edges["latent_discriminator"]  # the old key leads to the same network
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive, archive.open("model.weights.h5") as fh:
        with h5py.File(io.BytesIO(fh.read())) as h5:
            stored = []
            h5.visit(stored.append)
    assert any(name.startswith("critic/") for name in stored), stored
