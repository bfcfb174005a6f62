"""genzoo: generative models as Keras 3 subclassed models.

    model = zoo.build("vae", image_shape=(28, 28, 1), latent_dim=16)
"""

import dataclasses

import keras

from zoo.aae import AAE
from zoo.autoencoder import AE
from zoo.bigan import BiGAN
from zoo.gan import CGAN, DCGAN, GAN
from zoo.infogan import InfoGAN
from zoo.registry import get, names
from zoo.vae import CVAE, VAE
from zoo.ssaae import SSAAE
from zoo.vaegan import VAEGAN
from zoo.vqvae import VQVAE


def build(name: str, image_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10, **config) -> keras.Model:
    """A new, untrained model of the zoo.

    Args:
      name: a registered model name (zoo.names()).
      image_shape: (height, width, channels) of the images, in [0, 1].
      num_classes: number of labels (conditional models need >= 2).
      **config: options overriding the defaults of the model's Config
        (zoo.default_config(name)), e.g. latent_dim=16.

    Returns:
      The keras.Model subclass instance, built (its weights exist).

    Raises:
      ValueError: an unknown name, option or option value (one line, naming the valid ones)."""
    return get(name)(image_shape=image_shape, num_classes=num_classes, **config)


def default_config(name: str) -> dict:
    """The model's options and their default values, {option: value}."""
    return dataclasses.asdict(get(name).Config())


__all__ = ["build", "names", "get", "default_config", "AE", "VAE", "CVAE", "AAE", "BiGAN", "GAN", "DCGAN", "CGAN", "InfoGAN", "SSAAE", "VAEGAN", "VQVAE"]
