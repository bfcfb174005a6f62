"""The export's own safety: verification in a fresh process, and no version without it."""

import os

import pytest
import tensorflow as tf

import zoo
from export import saved_model


def tiny(name="vae", seed=0):
    model = zoo.build(name, image_shape=(8, 8, 1), latent_dim=2, net="mlp", seed=seed)
    model.compile(**model.compile_defaults())
    return model


def test_verification_catches_a_saved_model_that_differs_from_the_model(tmp_path):
    # (what matches: test_contract.py::test_every_export_answers_in_a_fresh_process)
    path = saved_model.export(tiny(), str(tmp_path), "vae", verify=False)
    other = tiny()  # same architecture, other weights
    with pytest.raises(saved_model.ExportError, match="differs from the in-memory model"):
        saved_model.verify_in_fresh_process([(path, other.serving_signatures(), {})])


def test_a_failed_verification_leaves_no_version(tmp_path, monkeypatch):
    def fail(*args):
        raise saved_model.ExportError("simulated failure")

    monkeypatch.setattr(saved_model, "verify_in_fresh_process", fail)
    with pytest.raises(saved_model.ExportError, match="simulated"):
        saved_model.export(tiny(), str(tmp_path), "vae")
    assert os.listdir(tmp_path / "vae") == []  # neither a version nor a temporary directory


def test_a_32x32_colour_model_exports_colour_signatures(tmp_path):
    model = zoo.build("dcgan", image_shape=(32, 32, 3), latent_dim=2, width=0.125)
    path = saved_model.export(model, str(tmp_path), "dcgan", verify=False)  # the fresh-process check: test_contract
    generate = tf.saved_model.load(path).signatures["generate"]
    assert generate.structured_outputs["images"].shape.as_list() == [None, 32, 32, 3]
    assert generate(z=tf.zeros([2, 2]))["images"].shape == (2, 32, 32, 3)


def test_class_names_travel_with_the_saved_model(tmp_path):
    model = zoo.build("cvae", image_shape=(8, 8, 1), num_classes=2, latent_dim=2, net="mlp")
    names = ["sevens", "threes"]
    path = saved_model.export(model, str(tmp_path), "cvae", verify=False, class_names=names)
    assert saved_model.read_class_names(path) == names  # line i names label i
    with open(os.path.join(path, "assets.extra", "class_names.txt")) as fh:
        assert fh.read() == "sevens\nthrees\n"
    plain = saved_model.export(tiny(), str(tmp_path), "vae", verify=False)
    assert saved_model.read_class_names(plain) is None
    with pytest.raises(saved_model.ExportError, match="3 class names for a model of 2 classes"):
        saved_model.export(model, str(tmp_path), "cvae", verify=False, class_names=names + ["x"])
    assert saved_model.versions(str(tmp_path / "cvae")) == [1]  # the refused export left nothing
