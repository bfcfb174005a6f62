"""The one list of the zoo: model name -> model class (whose Config holds the defaults)."""

from zoo.aae import AAE
from zoo.autoencoder import AE
from zoo.bigan import BiGAN
from zoo.gan import CGAN, DCGAN, GAN
from zoo.vae import CVAE, VAE

MODELS = {
    "ae": AE,
    "vae": VAE,
    "cvae": CVAE,
    "aae": AAE,
    "bigan": BiGAN,
    "gan": GAN,
    "dcgan": DCGAN,
    "cgan": CGAN,
}


def names():
    return sorted(MODELS)


def get(name):
    """The model class registered as `name`; ValueError listing the valid names otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(names())}")
    return MODELS[name]
