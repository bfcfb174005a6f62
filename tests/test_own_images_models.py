"""Every model with its conv nets on your own images: a folder of RGB PNGs in
two class subfolders, at 32x32 or 64x64 (apart from test_own_images.py, so
that the two files run on both test workers)."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLASSES


def history(workdir):
    with open(os.path.join(workdir, "history.csv")) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory):
    """One evaluation classifier per image size, shared by the models' cases."""
    return str(tmp_path_factory.mktemp("eval"))


SMALL = {"latent_dim": 8}  # and the GANs' nets at a quarter of their widths
# Each model at one of the two sizes, each size for half of them: the nets of
# both sizes are the same code for every model, and test_contract.py runs a
# train step of every model on its conv nets at 32x32x3 and generate at
# 64x64x3 (test_conv_nets_*); here the folder, evaluation and export path.
CASES = [("aae", 64), ("ae", 32), ("bigan", 64), ("cgan", 32), ("cvae", 64), ("dcgan", 32), ("gan", 64),
         ("vae", 32), ("vaegan", 32), ("ssaae", 32), ("vqvae", 32)]


@pytest.mark.parametrize("name, size", CASES)
def test_a_folder_trains_evaluates_and_exports_every_conv_model(folder, eval_cache, tmp_path, name, size):
    """The issue's bar: every model with its conv nets, on a folder of RGB
    PNGs in two class subfolders, one short epoch at 32x32 or 64x64; the
    class names travel to config.json and the SavedModel; every image output
    of every signature is [None, size, size, 3]."""
    import zoo
    from export import saved_model
    from train import evaluate, run
    from zoo import serving

    fields = zoo.get(name).Config.__dataclass_fields__
    options = {k: v for k, v in {**SMALL, "net": "conv"}.items() if k in fields}
    if "width" in fields:
        options["width"] = 0.25
    if "labelled" in fields:  # 2 labelled images of each of the folder's classes
        options.update(labelled=4, labelled_batch=4)
    if "prior_filters" in fields:
        options["prior_filters"] = 8
    workdir = str(tmp_path / "w")
    config = {"model": name, "dataset": f"folder:{folder}", "image_size": size, "seed": 0,
              "data_cache_dir": str(tmp_path / "cache"), "model_options": options,
              "training": {"epochs": 1, "batch_size": 8}}
    config["training"] = {**zoo.get(name).training_defaults_for(options), **config["training"]}
    trained = run.train(workdir, config, steps_per_epoch=2, verbose=0, jit_compile="off")
    rows = history(workdir)
    assert len(rows) == 1 and all(np.isfinite(float(v)) for k, v in rows[0].items() if k.endswith("loss"))
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["image_shape"] == [size, size, 3] and saved["class_names"] == CLASSES
    figures = evaluate.evaluate_workdir(workdir, eval_cache, num_samples=20, iwae_k=4, iwae_images=4)
    assert figures["classifier_test_accuracy"] > 0.9  # the classifier of the folder's own classes: 3 from 7
    assert np.isfinite(figures["fcd"]) and len(figures["class_histogram"]) == 2
    path = saved_model.export(trained, str(tmp_path / "serving"), name, verify=False, class_names=saved["class_names"])
    assert saved_model.read_class_names(path) == CLASSES
    loaded = tf.saved_model.load(path)  # the fresh-process verification of every model: test_contract
    for sig_name, fn in trained.serving_signatures().items():
        out = loaded.signatures[sig_name](**saved_model.example_inputs(fn, serving.index_bounds(trained), n=2))
        if "images" in out:
            assert loaded.signatures[sig_name].structured_outputs["images"].shape.as_list() == [None, size, size, 3]
            assert out["images"].shape == (2, size, size, 3)
    assert any("images" in loaded.signatures[s].structured_outputs for s in trained.serving_signatures())
