"""The model contract, checked for every registered model (zoo.names()),
and for a toy model registered here at test time, which needs no other file:

- two train steps give finite losses, and each declared optimizer moves
  only the variables it declares;
- the config round trip (get_config / from_config) rebuilds the same model;
- a .keras file and a tf.train.Checkpoint bring back identical outputs;
- every serving signature it declares (and sample, sample_png) runs on
  example inputs in this process, and its SavedModel answers them alike in a
  fresh process that loads it as a server does (TensorFlow only);
- its train step on two replicas of a MirroredStrategy makes the update of one
  device: every model has a case in tests/mirrored_check.py, run by its own
  test file (the toy, registered in this process only, is left out);
- on the conv nets of 32x32 colour images (zoo.nets' DCGAN nets) a train
  step moves every trainable weight, with finite losses, and `generate` draws
  colour images, at 64x64 too.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import mirrored_cases
import zoo
from conftest import small_options
from export import saved_model
from zoo import autoencoder, registry, serving
from zoo.base import option

SHAPE, CLASSES, BATCH = (8, 8, 1), 3, 8


@dataclasses.dataclass
class ToyConfig(autoencoder.AEConfig):
    latent_dim: int = option(2, "size of the code z")
    net: str = option("mlp", "encoder/decoder architecture", ("mlp",))


@keras.saving.register_keras_serializable(package="genzoo_test")
class ToyAE(autoencoder.AE):
    """A model added by a test: a registered subclass, nothing else."""

    Config = ToyConfig


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "toy", ToyAE)


def tiny(name, seed=0, shape=SHAPE, net=None, width=None):
    """Model `name` with latent_dim 4, on `net` nets where it has the option
    (None: mlp, and dcgan's conv), at `width` where it has that option."""
    keras.utils.set_random_seed(seed)
    config = zoo.default_config(name)
    options = small_options(name)
    if "net" in config:
        options["net"] = net or ("conv" if name == "dcgan" else "mlp")
    if width and "width" in config:
        options["width"] = width
    return zoo.build(name, image_shape=shape, num_classes=CLASSES, **options)


def batch(seed=0, shape=SHAPE, rows=BATCH * 2):
    """(images, labels) of `rows` rows; the default: GANs with d_steps > 1
    split a step's batch, 2 rows per replica at least."""
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 1, (rows, *shape)).astype(np.float32)),
            tf.constant(rng.integers(0, CLASSES, rows).astype(np.int32)))


def outputs(model):
    z = tf.random.stateless_normal([4, model.latent_dim], [1, 2])
    labels = tf.constant([0, 1, 2, 0]) if model.conditional else None
    return model.generate(z, labels=labels).numpy()


def names_with_toy():
    """The zoo's models and the toy, once each (with_toy registers the toy in zoo.names())."""
    return sorted({*zoo.names(), "toy"})


@pytest.mark.parametrize("name", names_with_toy())
def test_each_optimizer_moves_only_its_variables(name, with_toy):
    model = tiny(name)
    declared = model.optimizer_variables()
    assert set(declared) == set(model.optimizer_names)
    for stepping in model.optimizer_names:
        fresh = tiny(name)
        fresh.compile(**{n: keras.optimizers.SGD(0.1 if n == stepping else 0.0) for n in fresh.optimizer_names})
        moved_ids = {id(v) for v in fresh.optimizer_variables()[stepping]}
        before = {id(v): v.numpy().copy() for v in fresh.trainable_variables}
        for _ in range(2):
            logs = fresh.train_step(batch())
        assert all(np.isfinite(float(v)) for v in logs.values()), logs
        for v in fresh.trainable_variables:
            changed = not np.array_equal(before[id(v)], v.numpy())
            if id(v) not in moved_ids:
                assert not changed, (stepping, v.path)
        assert any(not np.array_equal(before[i], v.numpy()) for v in fresh.trainable_variables
                   for i in [id(v)] if i in moved_ids), f"{stepping} moved nothing"


@pytest.mark.parametrize("name", zoo.names())
def test_conv_nets_train_on_colour_images_and_generate_them(name):
    shape = (32, 32, 3)
    model = tiny(name, shape=shape, net="conv", width=0.25)  # a quarter of the GANs' widths: a cheaper step
    model.compile(**{n: keras.optimizers.SGD(0.01) for n in model.optimizer_names})
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    for _ in range(2 if "vq_steps" in zoo.default_config(name) else 1):  # a model trained in stages: one step each
        logs = model.train_step(batch(shape=shape, rows=4))
        assert all(np.isfinite(float(v)) for v in logs.values()), logs
    stuck = [v.path for v in model.trainable_variables if np.array_equal(before[v.path], v.numpy())]
    assert not stuck, stuck  # every layer is wired into a loss
    images = model.generate(3, labels=[0, 1, 2] if model.conditional else None).numpy()
    assert images.shape == (3, *shape) and np.all((images >= 0) & (images <= 1))


@pytest.mark.parametrize("name", zoo.names())
def test_conv_nets_generate_64x64_colour_images(name):
    # The 32x32 nets with one more stage (zoo.nets): building them checks every
    # layer's shapes; a train step would add 1-2 s per model and no new layer.
    model = tiny(name, shape=(64, 64, 3), net="conv", width=0.25)
    images = model.generate(2, labels=[0, 1] if model.conditional else None).numpy()
    assert images.shape == (2, 64, 64, 3) and np.all((images >= 0) & (images <= 1))


@pytest.mark.parametrize("name", names_with_toy())
def test_config_keras_file_and_checkpoint_round_trips(name, with_toy, tmp_path):
    model = tiny(name)
    model.compile()
    model.train_step(batch())  # trained weights, optimizer state, moving averages
    expected = outputs(model)

    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(outputs(loaded), expected, atol=1e-6)

    saved = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = tiny(name, seed=1)  # other initial weights
    tf.train.Checkpoint(model=restored).restore(saved).assert_existing_objects_matched()
    np.testing.assert_allclose(outputs(restored), expected, atol=1e-6)


@pytest.mark.parametrize("name", names_with_toy())
def test_declared_signatures_run(name, with_toy):
    model = tiny(name)
    signatures = model.serving_signatures()
    assert list(signatures) == [*model.signature_names, "sample", "sample_png"]
    for signature_name, fn in signatures.items():
        result = fn(**saved_model.example_inputs(fn, serving.index_bounds(model), n=3))
        for key, value in result.items():
            value = value.numpy()
            assert value.shape[0] == 3, (signature_name, key, value.shape)
            if key == "images":
                assert value.shape == (3, *SHAPE) and np.all((value >= 0) & (value <= 1)), signature_name
            elif value.dtype != object:  # PNG bytes aside
                assert np.all(np.isfinite(value)), (signature_name, key)


def test_every_export_answers_in_a_fresh_process(with_toy, tmp_path):
    """All the models' SavedModels, checked in one fresh process (export.verify)."""
    exports = []
    for name in names_with_toy():
        model = tiny(name)
        model.compile(**model.compile_defaults())
        model.train_step(batch())  # trained weights, moving averages
        path = saved_model.export(model, str(tmp_path), name, verify=False)
        exports.append((path, model.serving_signatures(), serving.index_bounds(model)))
    saved_model.verify_in_fresh_process(exports)  # raises ExportError naming the first that fails


def test_every_model_has_a_mirrored_case():
    covered = {mirrored_cases.case(c)[0] for c in [*mirrored_cases.CASES, *mirrored_cases.OTHER_CASES]}
    assert set(zoo.names()) <= covered, set(zoo.names()) - covered
