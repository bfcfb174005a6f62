"""Run by conftest.run_mirrored_check in a process of its own, whose TensorFlow
runtime has not started (logical devices must be set up before it does): for
each GAN model, two train steps on a global batch under
tf.distribute.MirroredStrategy over 2 logical CPU devices, and the same two
steps on one device; prints one JSON line {model: max |w_1 - w_2|}.
Cases named on the command line run instead (tests/test_aae.py,
tests/test_bigan.py and tests/test_gan.py run some of OTHER_CASES); every
optimizer the model's compile_defaults names becomes SGD.

SGD, not Adam: Adam's first steps are ~lr * sign(g), blind to the gradient's
scale, so they would hide a loss averaged over the per-replica batch."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402

import zoo  # noqa: E402

from mirrored_cases import CASES, OTHER_CASES, case  # noqa: E402,F401

SHAPE, CLASSES, BATCH, STEPS = (8, 8, 1), 3, 8, 2


def dataset(conditional, shape=SHAPE):
    rng = np.random.default_rng(0)
    images = rng.random((BATCH * STEPS, *shape), dtype=np.float32)
    labels = rng.integers(0, CLASSES, BATCH * STEPS).astype(np.int32)
    data = (images, labels) if conditional else images
    return tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True)


def trained(name, strategy, initial):
    with strategy.scope():
        model_name, config = case(name)
        model = zoo.build(model_name, num_classes=CLASSES, seed=3, **{"image_shape": SHAPE, **config})
        model.set_weights(initial)
        model.compile(**{key: keras.optimizers.SGD(0.1) for key in model.compile_defaults()})
    model.fit(dataset(model.conditional or name in OTHER_CASES, model.image_shape), epochs=1, verbose=0)
    return model.get_weights()


def main(names):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    mirrored = tf.distribute.MirroredStrategy(devices)
    assert mirrored.num_replicas_in_sync == 2
    result = {}
    for name in names:
        keras.utils.set_random_seed(0)
        model_name, config = case(name)
        model = zoo.build(model_name, num_classes=CLASSES, **{"image_shape": SHAPE, **config})
        if model.can("semi_supervised") and model.labelled_count:  # its labelled examples are weights
            rng = np.random.default_rng(1)
            model.set_labelled(rng.random((model.labelled_count, *model.image_shape), dtype=np.float32),
                               rng.integers(0, CLASSES, model.labelled_count))
        initial = model.get_weights()
        one = trained(name, tf.distribute.get_strategy(), initial)
        two = trained(name, mirrored, initial)
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one, initial))
        result[name] = {
            "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)),
            "moved": moved,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
