"""The semi-supervised AAE (zoo/ssaae.py): its four losses against their
formulas, the classification phase moving the encoder alone, the labelled
examples (set_labelled, train.data.labelled_subset, train.run's hook), a
short training whose classifier beats a bar on the test split (reported by
train.evaluate as classification_error), generation from the categorical
code. Its MirroredStrategy case runs with the AAE's (tests/test_aae.py).
Tiny shapes, fixed seeds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import unchanged, weights
from train import data
from zoo import distributions, losses

SHAPE = (8, 8, 1)


def build(labelled=10, optimizer=lambda: keras.optimizers.SGD(0.05), **config):
    keras.utils.set_random_seed(0)
    model = zoo.build("ssaae", image_shape=SHAPE, num_classes=10,
                      **{"style_dim": 3, "net": "mlp", "labelled": labelled, "labelled_batch": 4, **config})
    model.compile(**{name: optimizer() for name in model.optimizer_names})
    return model


def test_losses_match_their_formulas(digits64):
    model = build()
    x = tf.constant(digits64[0][:6])
    logits, style = model._outputs(x)
    y = tf.nn.softmax(logits)
    assert logits.shape == (6, 10) and style.shape == (6, 3) and model.latent_dim == 13
    np.testing.assert_allclose(model.encode(x), tf.concat([y, style], -1), atol=1e-6)
    np.testing.assert_allclose(model.classify(x), y, atol=1e-6)
    np.testing.assert_allclose(model.reconstruction_loss(x),
                               distributions.bernoulli_nll(x, model.decoder(tf.concat([y, style], -1))), rtol=1e-5)
    d_loss_fn, g_loss_fn = losses.get("non_saturating")
    seed = tf.constant([3, 4], tf.int64)
    y_prior, style_prior = model._prior_draws(6, seed)
    assert np.all(np.asarray(y_prior).sum(1) == 1) and set(np.unique(y_prior)) <= {0.0, 1.0}
    d_loss, _, _ = model.discriminator_loss(x, seed)
    expected = (d_loss_fn(model.category_discriminator(y_prior), model.category_discriminator(y))
                + d_loss_fn(model.style_discriminator(style_prior), model.style_discriminator(style)))
    np.testing.assert_allclose(d_loss, expected, rtol=1e-5)
    expected = g_loss_fn(model.category_discriminator(y)) + g_loss_fn(model.style_discriminator(style))
    np.testing.assert_allclose(model.generator_loss(x), expected, rtol=1e-5)


def test_classification_phase_reads_the_labelled_examples_and_moves_the_encoder_alone(digits64):
    images, labels = digits64
    model = build(optimizer=lambda: keras.optimizers.SGD(0.0))
    model.compile(ae_optimizer=keras.optimizers.SGD(0.0), d_optimizer=keras.optimizers.SGD(0.0),
                  g_optimizer=keras.optimizers.SGD(0.0), c_optimizer=keras.optimizers.SGD(0.05))
    data_batch = (tf.constant(images[:8]), tf.constant(labels[:8]))
    # unset (-1) labelled rows: a zero loss, and nothing moves
    before = weights(model.encoder)
    logs = model.train_step(data_batch)
    assert float(logs["class_loss"]) == 0.0 and unchanged(before, model.encoder)
    model.set_labelled(images[10:20], labels[10:20])
    seed = tf.random.experimental.stateless_fold_in(model._seed(0), 3)
    rows = np.asarray(tf.random.stateless_uniform([4], seed, 0, 10, dtype=tf.int32))
    with tf.GradientTape() as tape:
        logits, _ = model._outputs(images[10:20][rows])
        expected_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels[10:20][rows], logits=logits)
        mean = tf.reduce_mean(expected_loss)
    grads = tape.gradient(mean, model.encoder.trainable_variables)
    np.testing.assert_allclose(model.classification_loss(seed), expected_loss, rtol=1e-5)
    before = {net: weights(getattr(model, net)) for net in
              ("encoder", "decoder", "category_discriminator", "style_discriminator")}
    model.train_step(data_batch)
    for net in ("decoder", "category_discriminator", "style_discriminator"):
        assert unchanged(before[net], getattr(model, net)), net
    for w0, w1, g in zip(before["encoder"], weights(model.encoder), grads):
        np.testing.assert_allclose(w1, w0 - 0.05 * g.numpy(), rtol=1e-4, atol=1e-6)


def test_set_labelled_refuses_what_it_cannot_take(digits64):
    images, labels = digits64
    model = build()
    with pytest.raises(ValueError, match="set_labelled takes 10 images of shape"):
        model.set_labelled(images[:9], labels[:9])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        model.set_labelled(images[:10], np.full(10, 10))
    unsupervised = build(labelled=0)
    assert unsupervised.optimizer_names == ("ae_optimizer", "d_optimizer", "g_optimizer")
    with pytest.raises(ValueError, match="needs classes"):
        zoo.build("ssaae", image_shape=SHAPE, num_classes=0, labelled=10)
    assert zoo.build("ssaae", image_shape=SHAPE, num_classes=0, labelled=0).categories == 10


def test_labelled_subset_takes_the_same_number_per_class():
    labels = np.repeat(np.arange(3), 20)
    images = np.arange(60, dtype=np.float32)[:, None]
    x, y = data.labelled_subset(images, labels, 7, 3, seed=1)
    assert np.bincount(y, minlength=3).tolist() == [3, 2, 2]
    np.testing.assert_array_equal(labels[x[:, 0].astype(int)], y)  # each image with its own label
    assert not np.array_equal(x, data.labelled_subset(images, labels, 7, 3, seed=2)[0])
    with pytest.raises(data.DatasetError, match="needs 21 train images of class 0"):
        data.labelled_subset(images, labels, 63, 3)
    with pytest.raises(data.DatasetError, match="labelled dataset"):
        data.labelled_subset(images, None, 6, 0)


def test_generate_decodes_a_class_drawn_from_the_categorical_code():
    model = build()
    z = tf.random.stateless_normal([5, 13], [1, 2])
    codes = model.prior_codes(z)
    np.testing.assert_array_equal(np.argmax(codes[:, :10], 1), np.argmax(z[:, :10], 1))
    np.testing.assert_array_equal(codes[:, 10:], z[:, 10:])
    np.testing.assert_allclose(model.generate(z), model.decode(codes), atol=1e-6)
    three = model.with_category(z, 3)
    np.testing.assert_array_equal(model.category(three), [3] * 5)


def test_train_run_learns_classes_from_few_labels_and_evaluate_reports_the_error(tmp_path):
    """train.run takes 50 labelled digits (5 per class) from the train split;
    after 5 epochs on the 8x8 digits the classifier's test error is far below
    chance (0.9)."""
    from train import evaluate, run

    config = {"model": "ssaae", "dataset": "digits", "image_size": None, "seed": 0,
              "model_options": {"net": "mlp", "style_dim": 4, "labelled": 50, "labelled_batch": 16},
              "training": {"epochs": 5, "batch_size": 32, "learning_rate": 1e-3, "lr_decay": "none"}}
    model = run.train(str(tmp_path / "w"), config, verbose=0, jit_compile="off")
    labels = model.labelled_labels.numpy()
    assert np.bincount(labels, minlength=10).tolist() == [5] * 10
    figures = evaluate.classification_figures(model, data.load("digits"))
    assert figures["labelled"] == 50 and figures["classification_error"] < 0.4, figures


def test_a_model_with_its_labelled_examples_saves_and_loads(digits64, tmp_path):
    images, labels = digits64
    model = build(optimizer=lambda: keras.optimizers.Adam(1e-3))
    model.set_labelled(images[:10], labels[:10])
    model.train_step((tf.constant(images[:8]), tf.constant(labels[:8])))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.labelled_labels.dtype == "int32" and loaded.optimizer_names == model.optimizer_names
    np.testing.assert_array_equal(loaded.labelled_labels.numpy(), labels[:10])
    np.testing.assert_array_equal(loaded.labelled_images.numpy(), images[:10])
    assert int(loaded.c_optimizer.iterations.numpy()) == 1
    np.testing.assert_allclose(loaded.classify(images[:4]), model.classify(images[:4]), atol=1e-6)


def test_without_labels_the_error_is_that_of_the_best_map_of_categories_to_classes():
    from train import evaluate

    class Clusters:  # categories 0..9 that name the classes shifted by one
        labelled_count = 0

        def classify(self, images):
            return tf.one_hot((tf.cast(images[:, 0, 0, 0], tf.int32) + 1) % 10, 10)

    labels = np.arange(40) % 10
    dataset = type("D", (), {"test_images": labels.reshape(-1, 1, 1, 1).astype(np.float32), "test_labels": labels})
    assert evaluate.classification_figures(Clusters(), dataset)["classification_error"] == pytest.approx(0.0)
    Clusters.labelled_count = 10  # with labels, the categories must be the classes themselves
    assert evaluate.classification_figures(Clusters(), dataset)["classification_error"] == pytest.approx(1.0)
