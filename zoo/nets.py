"""Network builders for any image shape (H, W, C): MLP and convolutional encoders,
decoders, generators and discriminators, as functional keras.Models.

A conditioning or joint input (a one-hot label, BiGAN's code z) is a vector that
each builder concatenates to the flattened features. Decoders and generators
return raw outputs: the model decides their range (logits, tanh, ...)."""

import keras
from keras import layers

from zoo import layers as zoo_layers

KINDS = ("mlp", "conv")


def downsamplings(image_shape, max_steps=3):
    """Stride-2 halvings the conv nets use: as many as keep H and W integral and
    at least 4 (28 -> 7: 2, 8 -> 4: 1, 32 -> 4: 3)."""
    h, w = image_shape[:2]
    steps = 0
    while steps < max_steps and h % 2 == 0 and w % 2 == 0 and h // 2 >= 4 and w // 2 >= 4:
        h, w, steps = h // 2, w // 2, steps + 1
    if steps == 0:
        raise ValueError(
            f"conv nets cannot take images of shape {tuple(image_shape)}: height and width "
            f"must be even and at least 8; use net=mlp, or images of 28 or 32 pixels"
        )
    return steps


def scaled(units, width):
    """`units` times the width multiplier, at least 1."""
    return max(1, int(round(units * width)))


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"net={kind!r} is not valid; choose one of: {', '.join(KINDS)}")


def _inputs(image_shape, cond_dim):
    image = keras.Input(tuple(image_shape), name="images")
    cond = keras.Input((cond_dim,), name="cond") if cond_dim else None
    return image, cond


def _joined(features, cond):
    return layers.Concatenate()([features, cond]) if cond is not None else features


def _model(image, cond, out, name):
    return keras.Model([image, cond] if cond is not None else image, out, name=name)


def encoder(kind, image_shape, out_dim, cond_dim=0, hidden=256, name="encoder"):
    """x (and a condition vector) -> out_dim numbers (a code, or posterior parameters)."""
    check_kind(kind)
    image, cond = _inputs(image_shape, cond_dim)
    h = image
    if kind == "conv":
        for i in range(downsamplings(image_shape)):
            h = layers.Conv2D(32 * 2**i, 4, strides=2, padding="same", activation="relu")(h)
        h = layers.Flatten()(h)
        h = layers.Dense(hidden, activation="relu")(_joined(h, cond))
    else:
        h = layers.Flatten()(h)
        h = layers.Dense(2 * hidden, activation="relu")(_joined(h, cond))
        h = layers.Dense(hidden, activation="relu")(h)
    out = layers.Dense(out_dim, dtype="float32", name="out")(h)
    return _model(image, cond, out, name)


def decoder(kind, in_dim, image_shape, channels_per_pixel=1, hidden=256, name="decoder"):
    """z (joined with any condition, in_dim numbers) -> [H, W, C * channels_per_pixel] raw outputs."""
    check_kind(kind)
    h_img, w_img, c_img = image_shape
    out_channels = c_img * channels_per_pixel
    z = keras.Input((in_dim,), name="z")
    if kind == "conv":
        k = downsamplings(image_shape)
        h0, w0 = h_img // 2**k, w_img // 2**k
        h = layers.Dense(hidden, activation="relu")(z)
        h = layers.Dense(h0 * w0 * 32 * 2**k, activation="relu")(h)
        h = layers.Reshape((h0, w0, 32 * 2**k))(h)
        for i in reversed(range(k)):
            h = layers.Conv2DTranspose(32 * 2**i, 4, strides=2, padding="same", activation="relu")(h)
        out = layers.Conv2D(out_channels, 3, padding="same", dtype="float32", name="out")(h)
    else:
        h = layers.Dense(hidden, activation="relu")(z)
        h = layers.Dense(2 * hidden, activation="relu")(h)
        h = layers.Dense(h_img * w_img * out_channels, dtype="float32", name="out")(h)
        out = layers.Reshape((h_img, w_img, out_channels), dtype="float32")(h)
    return keras.Model(z, out, name=name)


def generator(kind, in_dim, image_shape, name="generator", width=1.0):
    """z -> x in [-1, 1] (tanh), GAN style. `width` scales every hidden layer's
    units or filters (1: the sizes below).

    conv is the DCGAN of the TensorFlow tutorial, generalised: Dense h0*w0*256,
    BN, LeakyReLU -> ConvT 128 s1 -> ConvT s2 stages halving the filters ->
    ConvT C s2 tanh; for 28x28x1 exactly Dense 7*7*256 -> 128 -> 64 -> 1. Batch
    norm is synchronized so that replicas of a MirroredStrategy normalise with
    the statistics of the global batch."""
    check_kind(kind)
    h_img, w_img, c_img = image_shape
    z = keras.Input((in_dim,), name="z")

    def bn_lrelu(h):
        h = zoo_layers.BatchNormalization(synchronized=True)(h)
        return layers.LeakyReLU(0.3)(h)

    if kind == "conv":
        k = downsamplings(image_shape)
        h0, w0 = h_img // 2**k, w_img // 2**k
        h = bn_lrelu(layers.Dense(h0 * w0 * scaled(256, width), use_bias=False)(z))
        h = layers.Reshape((h0, w0, scaled(256, width)))(h)
        h = bn_lrelu(layers.Conv2DTranspose(scaled(128, width), 5, strides=1, padding="same", use_bias=False)(h))
        for i in range(k - 1):
            h = layers.Conv2DTranspose(scaled(64 // 2**i, width), 5, strides=2, padding="same", use_bias=False)(h)
            h = bn_lrelu(h)
        h = layers.Conv2DTranspose(c_img, 5, strides=2, padding="same", use_bias=False)(h)
    else:
        h = z
        for units in (256, 512, 1024):
            h = layers.LeakyReLU(0.2)(layers.Dense(scaled(units, width))(h))
        h = layers.Dense(h_img * w_img * c_img)(h)
        h = layers.Reshape(tuple(image_shape))(h)
    out = layers.Activation("tanh", dtype="float32", name="out")(h)
    return keras.Model(z, out, name=name)


CONDITIONINGS = ("concat", "projection")


def discriminator(
    kind, image_shape, cond_dim=0, dropout=0.3, hidden=512, name="discriminator", spectral_norm=False,
    conditioning="concat", width=1.0,
):
    """x in [-1, 1] (and a condition or joint vector) -> one logit. `width`
    scales every hidden layer's units or filters.

    conv is the TensorFlow tutorial's DCGAN critic, generalised: Conv 64 s2 ->
    Conv 128 s2 ..., LeakyReLU and Dropout, Flatten -> Dense 1. A condition
    vector is joined to the flattened features through one hidden layer.
    spectral_norm wraps every Dense and Conv2D (the logit's and the joint
    layer's too) in zoo.layers.SpectralNormalization (Miyato et al. 2018).

    conditioning="projection" (for a class one-hot y; Miyato and Koyama 2018)
    does not join y to the features phi(x) but adds its projection on them:
    logit = w^T phi(x) + b + (V y)^T phi(x), so every class has its own
    direction in D's feature space from the first step."""
    check_kind(kind)
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning={conditioning!r} is not valid; choose one of: {', '.join(CONDITIONINGS)}")
    project = conditioning == "projection" and cond_dim > 0
    sn = zoo_layers.SpectralNormalization if spectral_norm else (lambda layer: layer)
    image, cond = _inputs(image_shape, cond_dim)
    h = image
    if kind == "conv":
        for i in range(downsamplings(image_shape)):
            h = sn(layers.Conv2D(scaled(64 * 2**i, width), 5, strides=2, padding="same"))(h)
            h = layers.LeakyReLU(0.3)(h)
            if dropout:
                h = zoo_layers.Dropout(dropout)(h)
        h = layers.Flatten()(h)
        if cond is not None and not project:
            h = layers.LeakyReLU(0.2)(sn(layers.Dense(scaled(hidden, width)))(_joined(h, cond)))
    else:
        h = layers.Flatten()(h)
        h = h if project else _joined(h, cond)
        for units in (hidden, hidden // 2):
            h = layers.LeakyReLU(0.2)(sn(layers.Dense(scaled(units, width)))(h))
            if dropout:
                h = zoo_layers.Dropout(dropout)(h)
    out = sn(layers.Dense(1, dtype="float32", name="logit"))(h)
    if project:
        embedded = sn(layers.Dense(h.shape[-1], use_bias=False, name="class_embedding"))(cond)
        projection = layers.Dot(axes=1, dtype="float32", name="projection")([embedded, h])
        out = layers.Add(dtype="float32", name="logit_projected")([out, projection])
    return _model(image, cond, out, name)


def critic(in_dim, hidden=512, name="critic"):
    """A vector (e.g. a latent code) -> one logit: the AAE's latent discriminator."""
    v = keras.Input((in_dim,), name="v")
    h = v
    for units in (hidden, hidden):
        h = layers.LeakyReLU(0.2)(layers.Dense(units)(h))
    out = layers.Dense(1, dtype="float32", name="logit")(h)
    return keras.Model(v, out, name=name)
