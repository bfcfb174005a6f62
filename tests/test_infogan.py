"""InfoGAN (zoo/infogan.py): L_I against its formula, the codes inside z, each
player lowering L_I while moving only its own networks, the best-permutation
accuracy, and MirroredStrategy equivalence. Tiny shapes, fixed seeds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import run_mirrored_check, unchanged, weights
from zoo import losses, metrics

SHAPE = (8, 8, 1)
K, C = 3, 2


def build(**config):
    keras.utils.set_random_seed(0)
    model = zoo.build("infogan", image_shape=SHAPE, num_classes=0,
                      **{"latent_dim": 8, "categories": K, "continuous": C, "d_dropout": 0.0, **config})
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_mutual_information_loss_matches_its_formula():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    categories = np.array([2, 1])
    means = np.array([[0.3, -1.0], [0.0, 2.0]], np.float32)
    codes = np.array([[1.3, -1.0], [-1.0, 0.0]], np.float32)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -log_softmax[[0, 1], categories] + 0.5 * ((codes - means) ** 2).sum(1)
    got = losses.mutual_information_loss(logits, categories, means, codes)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Q knowing nothing of a uniform categorical code: L_I = log K, the bound H(c) - L_I on I is 0.
    np.testing.assert_allclose(got[1] - 0.5 * 5.0, math.log(3), rtol=1e-6)
    # no categorical code (K = 0): the Gaussian term alone
    np.testing.assert_allclose(losses.mutual_information_loss(np.zeros((2, 0)), categories, means, codes),
                               0.5 * ((codes - means) ** 2).sum(1), rtol=1e-6)


def test_the_codes_live_in_z():
    model = build()
    z = tf.random.stateless_normal([200, 8], [1, 2])
    categories, continuous = model.codes(z)
    np.testing.assert_array_equal(categories, np.argmax(z[:, :K], 1))
    np.testing.assert_array_equal(continuous, z[:, K : K + C])
    g_in = model.generator_input(z).numpy()
    np.testing.assert_array_equal(g_in[:, :K], np.eye(K)[categories])  # G reads the category as a one-hot
    np.testing.assert_array_equal(g_in[:, K:], z[:, K:])
    # the K exchangeable normals make the category uniform
    assert np.bincount(categories, minlength=K).min() > 200 / K * 0.6
    wanted = np.arange(200) % K
    swapped = model.with_category(z, wanted).numpy()
    np.testing.assert_array_equal(model.category(swapped), wanted)
    np.testing.assert_array_equal(np.sort(swapped[:, :K], 1), np.sort(z[:, :K], 1))  # a swap: the same numbers
    np.testing.assert_array_equal(swapped[:, K:], z[:, K:])
    np.testing.assert_array_equal(model.category(model.with_category(z, 1)), np.ones(200))


def test_options_are_checked():
    with pytest.raises(ValueError, match="must fit in latent_dim"):
        build(categories=6, continuous=3)
    with pytest.raises(ValueError, match="categories must be 0 or >= 2"):
        build(categories=1)
    with pytest.raises(ValueError, match="needs a code"):
        build(categories=0, continuous=0)


def info_loss(model, images, z):
    return float(tf.reduce_mean(model.adversarial_losses(images, z=z, training=False)["info_loss"]))


def test_each_player_lowers_l_i_and_moves_only_its_networks(digits64):
    """D's updates move D and Q (not G) and lower L_I of fixed fakes; G's
    updates move G only, and also lower it: both maximise the bound on I."""
    model = build(info_weight=1.0)
    x, _ = digits64
    z = tf.random.stateless_normal([64, 8], [3, 4])
    before = info_loss(model, x, z)
    g = weights(model.generator)
    d_step = tf.function(model.discriminator_step)
    for _ in range(30):
        d_step(x)
    after_d = info_loss(model, x, z)
    assert after_d < before - 0.3, (before, after_d)
    assert unchanged(g, model.generator)
    d, q = weights(model.discriminator), weights(model.q_head)
    g_step = tf.function(model.generator_step)
    for _ in range(30):
        g_step(64)
    after_g = info_loss(model, x, z)
    assert after_g < after_d - 0.05, (after_d, after_g)
    assert unchanged(d, model.discriminator) and unchanged(q, model.q_head)
    assert {id(v) for v in model.optimizer_variables()["d_optimizer"]} == {
        id(v) for v in model.discriminator.trainable_variables + model.q_head.trainable_variables}


def test_train_step_tracks_the_info_loss_in_each_players_loss(digits64):
    model = build(real_target=1.0, info_weight=1.0)
    x, _ = digits64
    logs = model.train_step(x)
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake", "info_loss"}
    # at the start Q knows nothing: L_I is near log K + E[1/2 (c - mu)^2] = log 3 + C/2
    assert abs(float(logs["info_loss"]) - (math.log(K) + C / 2)) < 0.5, logs
    assert float(logs["d_loss"]) > float(logs["info_loss"])  # the adversarial part is added to it


def test_best_permutation_accuracy():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    assert metrics.best_permutation_accuracy((labels + 1) % 3, labels) == 1.0  # a relabelling is perfect
    codes = np.array([1, 1, 0, 0, 0, 2, 2, 1])  # 1->0 (3), 0->1 (2), 2->2 (2): 7 of 8
    assert metrics.best_permutation_accuracy(codes, labels) == pytest.approx(7 / 8)
    # more codes than classes: the unmatched code's examples count as errors
    assert metrics.best_permutation_accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 1, 1])) == pytest.approx(0.5)


def test_mirrored_strategy_matches_one_device():
    """The codes are part of z, one global draw sliced per replica; Q's loss is
    averaged over the global batch: 2 replicas make one device's update (the
    case runs d_steps=2 with update=simultaneous, so both step kinds)."""
    result = run_mirrored_check("infogan")
    assert result["infogan"]["moved"] > 1e-3 and result["infogan"]["max_diff"] < 1e-5, result


def test_traverse_switches_the_category_row_by_row():
    """explore --traverse on z: row j < K turns the category from 0 into j as
    z_j passes 0 (G reads a different one-hot at the two ends), rows past the
    codes sweep noise dimensions."""
    from train import explore

    model = build()
    images, figures = explore.traversal_rows(model, None, steps=4)
    assert images.shape == (8 * 4, *SHAPE) and len(figures["pixel_change"]) == 8
    z = np.zeros((2, 8), np.float32)
    z[:, 2] = [-3.0, 3.0]
    np.testing.assert_array_equal(model.category(z), [0, 2])
    assert all(change > 0 for change in figures["pixel_change"][1:K])
