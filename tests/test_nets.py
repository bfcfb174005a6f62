"""zoo/nets.py: which nets an image shape gets, the DCGAN paper's guidelines in
the 32x32 and 64x64 nets, the 28x28 nets pinned, and colour sample grids."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
from train import callbacks, explore
from zoo import nets

DIGITS = (28, 28, 1)

# Parameter counts of the 28x28 nets at 0834899, before the DCGAN nets: the
# default runs' figures were measured with these nets, so they must not change.
PINNED_28x28 = {
    "encoder conv": (lambda: nets.encoder("conv", DIGITS, 32), 844672),
    "encoder conv cond": (lambda: nets.encoder("conv", DIGITS, 32, cond_dim=10), 847232),
    "encoder mlp": (lambda: nets.encoder("mlp", DIGITS, 32), 541472),
    "decoder conv": (lambda: nets.decoder("conv", 16, DIGITS), 1780481),
    "decoder conv 2 per pixel": (lambda: nets.decoder("conv", 16, DIGITS, channels_per_pixel=2), 1780770),
    "decoder mlp": (lambda: nets.decoder("mlp", 16, DIGITS), 538128),
    "generator conv": (lambda: nets.generator("conv", 100, DIGITS), 2330944),
    "generator conv width 0.5": (lambda: nets.generator("conv", 100, DIGITS, width=0.5), 909472),
    "generator mlp": (lambda: nets.generator("mlp", 64, DIGITS), 1477136),
    "discriminator conv": (lambda: nets.discriminator("conv", DIGITS), 212865),
    "discriminator conv width 0.5 z": (lambda: nets.discriminator("conv", DIGITS, cond_dim=50, width=0.5), 868225),
    "discriminator conv projection sn": (
        lambda: nets.discriminator("conv", DIGITS, cond_dim=10, conditioning="projection", spectral_norm=True), 282050
    ),
    "discriminator mlp cond": (lambda: nets.discriminator("mlp", DIGITS, cond_dim=10), 538625),
    "critic": (lambda: nets.critic(16), 271873),
}


@pytest.mark.parametrize("case", sorted(PINNED_28x28))
def test_the_28x28_nets_keep_their_parameter_counts(case):
    build, count = PINNED_28x28[case]
    net = build()
    assert net.count_params() == count
    assert not nets.has_batch_norm(net) or case.startswith("generator conv")  # only the tutorial's G has any


@pytest.mark.parametrize("shape, dcgan", [
    ((32, 32, 3), True), ((64, 64, 1), True), ((128, 128, 3), True),
    ((28, 28, 1), False), ((16, 16, 3), False), ((48, 48, 3), False), ((32, 64, 3), False),
])
def test_the_dcgan_nets_are_for_square_power_of_two_sides_from_32(shape, dcgan):
    assert nets.dcgan_sized(shape) is dcgan


def chain(net):
    """[(layer class, output shape without the batch)] of a net that is one chain of layers."""
    return [(type(layer).__name__, tuple(layer.output.shape[1:])) for layer in net.layers[1:]]


def kinds(net):
    return [kind for kind, _ in chain(net)]


@pytest.mark.parametrize("side, stages", [
    (64, [(4, 4, 512), (8, 8, 256), (16, 16, 128), (32, 32, 64), (64, 64, 3)]),
    (32, [(4, 4, 256), (8, 8, 128), (16, 16, 64), (32, 32, 3)]),
])
def test_dcgan_generator_follows_the_paper(side, stages):
    g = nets.generator("conv", 100, (side, side, 3))
    assert [s for kind, s in chain(g) if kind in ("Reshape", "Conv2DTranspose")] == stages
    # project and reshape, then BN + ReLU after every layer but the output, which is tanh
    hidden = ["BatchNormalization", "ReLU"]
    assert kinds(g) == ["Dense", "Reshape", *hidden, *["Conv2DTranspose", *hidden] * (len(stages) - 2),
                        "Conv2DTranspose", "Activation"]
    assert g.layers[-1].activation.__name__ == "tanh"


@pytest.mark.parametrize("side, stages", [
    (64, [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)]),
    (32, [(16, 16, 64), (8, 8, 128), (4, 4, 256)]),
])
def test_dcgan_discriminator_follows_the_paper(side, stages):
    d = nets.discriminator("conv", (side, side, 3), dropout=0.0)
    assert [s for kind, s in chain(d) if kind == "Conv2D"] == stages
    # no BN on the input layer, BN + LeakyReLU(0.2) after every other conv
    assert kinds(d) == ["Conv2D", "LeakyReLU", *["Conv2D", "BatchNormalization", "LeakyReLU"] * (len(stages) - 1),
                        "Flatten", "Dense"]
    assert {layer.negative_slope for layer in d.layers if type(layer).__name__ == "LeakyReLU"} == {0.2}
    # without batch norm, and the autoencoders' nets never have it (their losses are per example)
    assert not nets.has_batch_norm(nets.discriminator("conv", (side, side, 3), batch_norm=False))
    assert not nets.has_batch_norm(nets.encoder("conv", (side, side, 3), 8))
    assert not nets.has_batch_norm(nets.decoder("conv", 8, (side, side, 3)))


@pytest.mark.parametrize("options, batch_norm", [
    ({}, True), ({"loss": "wasserstein_gp"}, False), ({"r1_weight": 1.0}, False), ({"spectral_norm": True}, False),
])
def test_gans_drop_ds_batch_norm_for_per_example_gradients_and_spectral_norm(options, batch_norm):
    model = zoo.build("dcgan", image_shape=(32, 32, 3), latent_dim=4, width=0.125, **options)
    assert nets.has_batch_norm(model.discriminator) is batch_norm
    assert nets.has_batch_norm(model.generator)


class Painter:
    """A stand-in model whose `generate` returns known colour images."""

    def __init__(self, images):
        self.images = images

    def generate(self, z, labels=None):
        return self.images


def colour_images(n=4, side=8):
    """n images, each one flat colour (i / n, 1 - i / n, 0.25)."""
    t = np.arange(n, dtype=np.float32)[:, None, None, None] / n
    return np.broadcast_to(np.concatenate([t, 1 - t, np.full_like(t, 0.25)], axis=-1), (n, side, side, 3)).copy()


def test_colour_sample_grids_are_rgb_pngs_and_tensorboard_images(tmp_path):
    images = colour_images()
    grid = callbacks.SampleGrid(str(tmp_path / "samples"), (None, None), tensorboard_dir=str(tmp_path / "tb"))
    grid.set_model(Painter(images))
    grid.on_epoch_end(0)
    png = Image.open(tmp_path / "samples" / "epoch_0001.png")
    assert png.mode == "RGB"
    expected = callbacks.image_grid(images)
    scale = png.width // expected.shape[1]
    assert np.array_equal(np.asarray(png)[::scale, ::scale], expected)
    assert tuple(expected[1 + 4, 1 + 4]) == (0, 255, 64)  # image 0's colour, at its cell's centre
    event = next(f for f in (tmp_path / "tb").iterdir())
    encoded = [v.tensor.string_val[2] for e in tf.compat.v1.train.summary_iterator(str(event))
               for v in e.summary.value if v.tag == "samples"]
    assert tf.io.decode_png(encoded[0]).shape[-1] == 3
    # explore's figures are grids too; grey images stay grey
    assert Image.open(explore.write_grid(str(tmp_path / "interpolate.png"), images, 2)).mode == "RGB"
    assert Image.open(explore.write_grid(str(tmp_path / "grey.png"), images[..., :1], 2)).mode == "L"
