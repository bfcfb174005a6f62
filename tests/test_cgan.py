"""The conditional GAN's projection discriminator: its logit is the formula."""

import keras
import numpy as np
import pytest

import zoo
from zoo import nets


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_projection_logit_is_linear_plus_class_projection(kind):
    d = nets.discriminator(kind, (8, 8, 1), cond_dim=3, dropout=0.0, conditioning="projection")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
    phi_layer = d.get_layer("logit").input  # the features phi(x) the logit and the projection read
    phi = keras.Model(d.inputs, phi_layer)([x, y]).numpy()
    w, b = d.get_layer("logit").get_weights()
    (v,) = d.get_layer("class_embedding").get_weights()  # [classes, features]
    expected = phi @ w[:, 0] + b[0] + np.sum((y @ v) * phi, axis=1)
    np.testing.assert_allclose(d([x, y]).numpy()[:, 0], expected, rtol=1e-4, atol=1e-4)
    # the label changes the logit (concat would too, but projection must not ignore it)
    other = np.eye(3, dtype=np.float32)[[1, 2, 0, 0, 2]]
    assert np.abs(d([x, y]).numpy() - d([x, other]).numpy()).max() > 1e-4


def test_cgan_conditioning_option():
    model = zoo.build("cgan", image_shape=(8, 8, 1), num_classes=3, conditioning="projection")
    assert model.discriminator.get_layer("class_embedding") is not None
    with pytest.raises(ValueError, match="conditioning"):
        zoo.build("cgan", image_shape=(8, 8, 1), num_classes=3, conditioning="film")
    config = model.get_config()
    assert config["conditioning"] == "projection"
    assert type(model).from_config(config).config.conditioning == "projection"


def test_a_cgan_saved_before_the_new_options_loads_as_it_was_trained():
    """A config without `conditioning` and `ema_decay` (saved before they
    existed) is the concat discriminator without an average, not today's defaults."""
    new = zoo.build("cgan", image_shape=(8, 8, 1), num_classes=3)
    assert (new.config.conditioning, new.config.ema_decay) == ("projection", 0.999)
    config = new.get_config()
    for key in ("conditioning", "ema_decay"):
        config.pop(key)
    old = zoo.CGAN.from_config(config)
    assert (old.config.conditioning, old.config.ema_decay) == ("concat", 0.0)
    assert not [w for w in old.weights if "ema_" in w.path]
    assert zoo.CGAN.saved_options({"ema_decay": 0.5})["ema_decay"] == 0.5  # a saved value wins
