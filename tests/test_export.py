"""The export's own safety: verification in a fresh process, and no version without it."""

import os

import pytest

import zoo
from export import saved_model


def tiny(name="vae", seed=0):
    model = zoo.build(name, image_shape=(8, 8, 1), latent_dim=2, net="mlp", seed=seed)
    model.compile(**model.compile_defaults())
    return model


def test_verification_catches_a_saved_model_that_differs_from_the_model(tmp_path):
    path = saved_model.export(tiny(), str(tmp_path), "vae")  # verified: loads and matches
    other = tiny()  # same architecture, other weights
    with pytest.raises(saved_model.ExportError, match="differs from the in-memory model"):
        saved_model.verify_in_fresh_process([(path, other.serving_signatures(), 0)])


def test_a_failed_verification_leaves_no_version(tmp_path, monkeypatch):
    def fail(*args):
        raise saved_model.ExportError("simulated failure")

    monkeypatch.setattr(saved_model, "verify_in_fresh_process", fail)
    with pytest.raises(saved_model.ExportError, match="simulated"):
        saved_model.export(tiny(), str(tmp_path), "vae")
    assert os.listdir(tmp_path / "vae") == []  # neither a version nor a temporary directory
