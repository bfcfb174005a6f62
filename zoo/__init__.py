"""genzoo: generative models as Keras 3 subclassed models.

    model = zoo.build("vae", image_shape=(28, 28, 1), latent_dim=16)
"""

import dataclasses

from zoo.aae import AAE
from zoo.autoencoder import AE
from zoo.bigan import BiGAN
from zoo.gan import CGAN, DCGAN, GAN
from zoo.registry import get, names
from zoo.vae import CVAE, VAE


def build(name, image_shape=(28, 28, 1), num_classes=10, **config):
    """A new model `name` for images of `image_shape`, with `config` overriding
    the defaults of the model's Config."""
    return get(name)(image_shape=image_shape, num_classes=num_classes, **config)


def default_config(name):
    """The model's options and their default values."""
    return dataclasses.asdict(get(name).Config())


__all__ = ["build", "names", "get", "default_config", "AE", "VAE", "CVAE", "AAE", "BiGAN", "GAN", "DCGAN", "CGAN"]
