"""Capabilities are declared, not probed: each model class's declared
capabilities agree with the methods it has, and zoo.names(capability) lists
exactly the models that declare one."""

import pytest

import zoo
from zoo.base import CAPABILITIES

METHODS = {
    "encoder": ("encode", "encode_all", "reconstruct"),
    "decoder": ("decode",),
    "fitted_sampler": ("fit_sampler", "try_fit_sampler"),
    "likelihood": ("elbo_terms", "iwae_bound", "bound_kind", "evaluation_images"),
    "averaging": ("update_ema", "averaged_call"),
    "categorical_code": ("categories", "with_category"),
    "semi_supervised": ("classify", "labelled_count", "set_labelled"),
}


@pytest.mark.parametrize("name", zoo.names())
def test_declared_capabilities_agree_with_the_methods(name):
    cls = zoo.get(name)
    for capability, methods in METHODS.items():
        has = [hasattr(cls, m) for m in methods]
        # reconstruct alone is no encoder: VQ-VAE reconstructs through grids of code indices
        probed = [h for m, h in zip(methods, has) if m != "reconstruct"]
        assert all(has) == cls.can(capability) and any(probed) == all(probed), (name, capability, has)
    assert cls.can("conditional") == cls.conditional


def test_names_by_capability():
    assert set(METHODS) | {"conditional"} == set(CAPABILITIES)
    assert zoo.names("categorical_code") == ["infogan", "ssaae"]
    assert zoo.names("semi_supervised") == ["ssaae"]
    assert zoo.names("likelihood") == ["cvae", "vae"]
    assert zoo.names("conditional") == ["cgan", "cvae"]
    assert zoo.names("encoder") == ["aae", "ae", "bigan", "cvae", "ssaae", "vae", "vaegan"]
    for capability in CAPABILITIES:
        assert zoo.names(capability) == [n for n in zoo.names() if zoo.get(n).can(capability)]
    with pytest.raises(ValueError, match="unknown capability 'flies'; valid: encoder, decoder"):
        zoo.names("flies")


def test_uses_average_follows_ema_decay():
    assert zoo.build("dcgan").uses_average and not zoo.build("dcgan", ema_decay=0.0).uses_average
    assert not zoo.build("vae").uses_average
