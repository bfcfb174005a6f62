"""Every model's train step scales its losses for the optimizers that unscale
them: an optimizer with a loss scale (Keras' `loss_scale_factor`, what the
mixed_float16 LossScaleOptimizer sets) makes the same update as one without.
Regression test: the AE and VAE steps once skipped `scale_loss`, so their
gradients were divided by the scale without having been multiplied by it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import small_options

SHAPE = (8, 8, 1)


def step_once(name, loss_scale_factor, images, labels):
    keras.utils.set_random_seed(0)
    model = zoo.build(name, image_shape=SHAPE, num_classes=3, **small_options(name, net="mlp"))
    names = model.optimizer_names
    model.compile(**{n: keras.optimizers.SGD(0.5, loss_scale_factor=loss_scale_factor) for n in names})
    before = [v.numpy() for v in model.trainable_variables]
    model.train_step((tf.constant(images), tf.constant(labels)))
    return before, [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize("name", zoo.names())
def test_a_loss_scale_leaves_the_update_unchanged(name):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, *SHAPE)).astype(np.float32)
    labels = np.arange(6, dtype=np.int32) % 3
    start, plain = step_once(name, None, images, labels)
    _, scaled = step_once(name, 256.0, images, labels)
    moved = max(np.abs(p - s).max() for p, s in zip(plain, start))
    assert moved > 1e-4  # the step did update
    for p, s in zip(plain, scaled):
        np.testing.assert_allclose(s, p, rtol=1e-4, atol=1e-6)
