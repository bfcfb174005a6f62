"""The one list of the zoo: model name -> model class (whose Config holds the defaults)."""

from zoo.aae import AAE
from zoo.autoencoder import AE
from zoo.bigan import BiGAN
from zoo.gan import CGAN, DCGAN, GAN
from zoo.infogan import InfoGAN
from zoo.vae import CVAE, VAE
from zoo.ssaae import SSAAE
from zoo.vaegan import VAEGAN
from zoo.vqvae import VQVAE

MODELS = {
    "ae": AE,
    "vae": VAE,
    "cvae": CVAE,
    "aae": AAE,
    "bigan": BiGAN,
    "gan": GAN,
    "dcgan": DCGAN,
    "cgan": CGAN,
    "infogan": InfoGAN,
    "ssaae": SSAAE,
    "vaegan": VAEGAN,
    "vqvae": VQVAE,
}


def names(capability: str | None = None) -> list[str]:
    """The registered model names, sorted; with `capability` (one of
    zoo.base.CAPABILITIES), only the models that have it."""
    from zoo.base import check_capability

    if capability is None:
        return sorted(MODELS)
    check_capability(capability)
    return sorted(name for name, cls in MODELS.items() if cls.can(capability))


def get(name: str) -> type:
    """The model class registered as `name`; ValueError listing the valid names otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(names())}")
    return MODELS[name]
