"""Your own images: folder:PATH, mnist5k_rgb, and the tfds sets through tfds.testing.mock_data."""

import csv
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from train import data

from conftest import CLASSES, PER_CLASS


def load(path, tmp_path, **kwargs):
    return data.load(f"folder:{path}", cache_dir=str(tmp_path / "cache"), **kwargs)


def test_mnist5k_rgb_colours_mnist5k_with_its_split(rgb):
    grey = data.load("mnist5k")
    assert rgb.image_shape == (32, 32, 3) and rgb.num_classes == 10
    np.testing.assert_array_equal(rgb.train_labels, grey.train_labels)
    np.testing.assert_array_equal(rgb.test_labels, grey.test_labels)
    assert rgb.train_images.dtype == np.float32 and 0.0 <= rgb.train_images.min() and rgb.train_images.max() <= 1.0
    # every image has two colours of its own: the corners (background) differ between images
    corners = rgb.train_images[:200, 0, 0]
    assert len(np.unique(corners.round(3), axis=0)) > 190
    fg, bg = data.contrasting_colours(500, np.random.RandomState(0))
    luma = np.array([0.2126, 0.7152, 0.0722])
    assert np.abs(fg @ luma - bg @ luma).min() >= data.MIN_LUMA_CONTRAST


def test_a_labelled_folder_reads_back_its_images_with_their_classes(folder, rgb, tmp_path):
    d = load(folder, tmp_path, image_size=32)
    assert d.image_shape == (32, 32, 3) and d.num_classes == 2 and d.class_names == CLASSES
    assert len(d.train_images) + len(d.test_images) == 2 * PER_CLASS
    assert 0.04 < len(d.test_images) / (2 * PER_CLASS) < 0.2  # --test_fraction 0.1
    # the PNGs hold the images exactly (8-bit): each class's pixel sums are the source's
    sources = np.concatenate([rgb.train_images, rgb.test_images])
    labels = np.concatenate([rgb.train_labels, rgb.test_labels])
    for k, name in enumerate(CLASSES):
        want = np.round(sources[labels == int(name)][:PER_CLASS] * 255).sum((1, 2, 3))
        got = np.concatenate([d.train_images[d.train_labels == k], d.test_images[d.test_labels == k]])
        np.testing.assert_allclose(np.sort(np.round(got * 255).sum((1, 2, 3))), np.sort(want))
    batch = next(iter(data.training_pipeline(d.train_images, d.train_labels, 16, seed=0)))
    assert batch[0].shape == (16, 32, 32, 3) and batch[0].dtype == tf.float32


def test_the_split_is_stable_when_files_are_added(folder, tmp_path):
    path = str(tmp_path / "f")
    shutil.copytree(folder, path)

    def sides():
        d = load(path, tmp_path, image_size=32)
        return [set(np.round(x * 255).sum((1, 2, 3))) for x in (d.train_images[:], d.test_images[:])]

    train, test = sides()
    for n in range(10):  # new files, of new pixel sums
        Image.new("RGB", (32, 32), (n, 2 * n, 200)).save(os.path.join(path, "7", f"new{n}.png"))
    train_after, test_after = sides()
    assert train <= train_after and test <= test_after  # no file changed sides
    assert len(train_after | test_after) == len(train | test) + 10


def test_unreadable_files_are_skipped_in_one_warning_line(folder, tmp_path, caplog):
    path = str(tmp_path / "f")
    shutil.copytree(folder, path)
    with open(os.path.join(path, "3", "bad.png"), "wb") as fh:
        fh.write(b"not a png")
    with open(os.path.join(path, "7", "0.png"), "rb") as fh:
        head = fh.read(80)
    with open(os.path.join(path, "7", "cut.png"), "wb") as fh:
        fh.write(head)
    with caplog.at_level(logging.WARNING):
        d = load(path, tmp_path, image_size=32)
    assert len(d.train_images) + len(d.test_images) == 2 * PER_CLASS
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "skipped 2 unreadable or truncated image files (3/bad.png, 7/cut.png)" in lines[0]


def test_a_grey_unlabelled_folder_is_one_channel_at_64_pixels(tmp_path, monkeypatch):
    path = tmp_path / "grey"
    path.mkdir()
    rng = np.random.RandomState(0)
    for n in range(40):  # any size: squared about the centre and resized to 64
        Image.fromarray(rng.randint(0, 256, (30 + n, 50), np.uint8)).save(path / f"{n}.png")
    Image.fromarray(rng.randint(0, 256, (20, 20), np.uint8)).convert("P").save(path / "x.gif")
    d = load(str(path), tmp_path)
    assert d.image_shape == (64, 64, 1) and d.num_classes == 0 and d.class_names is None
    assert len(d.train_images) + len(d.test_images) == 41
    assert load(str(path), tmp_path, channels=3).image_shape == (64, 64, 3)
    # evaluated without labels: the figures that need no classifier, and a note for the others
    import zoo
    from train import evaluate

    def offline():  # what Keras raises here, with no network and no cached weights
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: Name or service not known")

    monkeypatch.setattr(evaluate, "inception_features", offline)
    model = zoo.build("vae", image_shape=d.image_shape, num_classes=0, net="mlp", latent_dim=2)
    figures = evaluate.evaluate(model, d, str(tmp_path / "eval"), iwae_k=2)
    assert "has no labels" in figures["note"] and "fcd" not in figures and "linear_probe_accuracy" not in figures
    assert "InceptionV3" in figures["inception_note"] and evaluate.INCEPTION_FILE in figures["inception_note"]
    assert "fid" not in figures
    assert figures["reconstruction_mse"] > 0 and np.isfinite(figures["iwae_unnormalised"])
    # with weights (here a stand-in feature map): FID and KID against their floor, the train images
    spread = lambda images: tf.stack([tf.reduce_mean(images, [1, 2, 3]), tf.math.reduce_std(images, [1, 2, 3])], 1)  # noqa: E731
    figures = evaluate.inception_figures(model, d, num_samples=4, features=spread)
    assert figures["num_samples"] == min(4, len(d.test_images)) and figures["fid"] > figures["fid_reference"] >= 0
    assert figures["kid"] > figures["kid_reference"]  # an untrained VAE's blur is further from the noise images


def test_images_are_squared_about_their_centre_and_celeb_a_cut_to_the_face():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # the centred square
    assert data.square_uint8(Image.fromarray(wide), 10, 3).min() == 255
    face = np.zeros((218, 178, 3), np.uint8)
    top, left, h, w = data.TFDS_CROPS["celeb_a"]
    assert (top, left, h, w) == ((218 - 108) // 2, (178 - 108) // 2, 108, 108)
    face[top : top + h, left : left + w] = 200
    cut = data.square_uint8(Image.fromarray(face), 64, 3, crop=data.TFDS_CROPS["celeb_a"])
    assert cut.shape == (64, 64, 3) and cut.min() == 200


@pytest.mark.parametrize("make, message", [
    (lambda p: None, r"no such folder"),
    (lambda p: p.mkdir(), r"holds no image files \(.png, .jpg, .jpeg, .bmp, .gif\)"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), r"holds no image files"),
    (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"x")), r"none of the 1 image files .* could be read \(e\.g\. a\.png\)"),
    (lambda p: (p.mkdir(), Image.new("RGB", (8, 8)).save(p / "a.png")), r"held-out split of its 1 images is"),
], ids=["missing", "empty", "no images", "unreadable", "too few"])
def test_bad_folders_are_one_line_errors(tmp_path, make, message):
    from train import run

    path = tmp_path / "f"
    make(path)
    config = {"model": "vae", "dataset": f"folder:{path}", "image_size": 8, "seed": 0, "data_cache_dir": str(tmp_path),
              "model_options": {}, "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}
    with pytest.raises(run.RunError, match=message) as e:
        run.train(str(tmp_path / "w"), config, verbose=0)
    assert "\n" not in str(e.value) and not (tmp_path / "w").exists()


def test_a_folder_run_keeps_the_absolute_path_and_a_short_workdir(tmp_path, monkeypatch):
    import copy

    from train import run

    run.define_flags()
    monkeypatch.chdir(tmp_path)
    values = copy.deepcopy(run.FLAGS)
    values(["train.run", "--dataset=folder:pics/", "--channels=1"])
    workdir, config = run.resolve(values)
    assert workdir == os.path.join("runs", "vae-folder-pics")
    assert config["dataset"] == f"folder:{tmp_path / 'pics'}" and config["channels"] == 1


def history(workdir):
    with open(os.path.join(workdir, "history.csv")) as fh:
        return list(csv.DictReader(fh))


def test_celeb_a_is_unlabelled_64_pixel_face_crops_under_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "_online", lambda timeout=3.0: True)  # the mock replaces the download
    with tfds.testing.mock_data(num_examples=4):
        d = data.load("celeb_a")
    assert d.image_shape == (64, 64, 3) and d.num_classes == 0 and len(d.train_images) == 4
    assert d.key == "celeb_a-mock"  # never the real set's classifier cache


MOCKS = [("mnist", [28, 28, 1], 10), ("fashion_mnist", [28, 28, 1], 10), ("cifar10", [32, 32, 3], 10),
         ("celeb_a", [64, 64, 3], 0)]


@pytest.mark.parametrize("name, shape, classes", MOCKS, ids=[m[0] for m in MOCKS])
def test_tfds_sets_train_offline_through_mock_data(tmp_path, monkeypatch, name, shape, classes):
    """tfds's mock examples follow each set's real features (image and label
    keys, dtypes, shapes): train.run reads them as it would the real set."""
    import tensorflow_datasets as tfds

    from train import run

    monkeypatch.setattr(data, "_online", lambda timeout=3.0: True)  # the mock replaces the download
    model = "cvae" if classes else "ae"  # the labels condition the CVAE
    config = {"model": model, "dataset": name, "image_size": None, "seed": 0, "data_cache_dir": str(tmp_path / "c"),
              "model_options": {"net": "mlp", "latent_dim": 2},
              "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}
    with tfds.testing.mock_data(num_examples=16):
        run.train(str(tmp_path / "w"), config, verbose=0, jit_compile="off")
    saved = json.load(open(tmp_path / "w" / "config.json"))
    assert saved["image_shape"] == shape and saved["num_classes"] == classes
    assert (saved["class_names"] is None) == (classes == 0)
    assert [row["epoch"] for row in history(str(tmp_path / "w"))] == ["0"]
    assert not os.path.exists(tmp_path / "c")  # mock examples are never cached
