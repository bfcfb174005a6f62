"""Network builders for any image shape (H, W, C): MLP and convolutional encoders,
decoders, generators and discriminators, as functional keras.Models.

A conditioning or joint input (a one-hot label, BiGAN's code z) is a vector that
each builder concatenates to the flattened features. Decoders and generators
return raw outputs: the model decides their range (logits, tanh, ...).

Which conv nets an image shape gets (`dcgan_sized`):

- square images whose side is a power of two of at least 32 (32x32, 64x64, ...;
  any C): the nets of the DCGAN paper's guidelines (Radford et al. 2016). From
  the image down to 4x4, k = log2(side / 4) stride-2 4x4 convolutions of 64,
  128, 256, ... filters (doubling per halving), LeakyReLU(0.2); G and decoders
  mirror them: z -> 4x4 x 64 * 2^(k-1) (a projection and reshape) -> ConvT
  stride 2 halving the filters -> ConvT to C channels, ReLU between. So the
  64x64 G is z -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64xC and
  the 32x32 one z -> 4x4x256 -> 8x8x128 -> 16x16x64 -> 32x32xC. G and D have
  batch norm after every layer but G's output and D's input layer (and D none
  when the model asks so, see `discriminator`); encoders and decoders have
  none, because the autoencoders' losses and likelihood bounds are per
  example, which batch statistics in training would tie to the batch.
- every other shape (28x28 digits, 8x8, 48x48, ...): the TensorFlow tutorials'
  nets (DCGAN, CVAE), generalised, with which the default runs' figures were
  measured: at most three stride-2 halvings (`downsamplings`), no batch norm
  but in G.

4x4 kernels with stride 2 (as the PyTorch DCGAN example) cover every output
pixel of a transposed convolution equally, without checkerboard artefacts
(Odena et al. 2016)."""

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
            f"must be even and at least 8; use net=mlp, or images of 28, 32 or 64 pixels"
        )
    return steps


def dcgan_sized(image_shape):
    """Whether the conv nets for `image_shape` are the DCGAN ones: square, the
    side a power of two of at least 32 (see the module docstring)."""
    h, w = image_shape[:2]
    return h == w and h >= 32 and h & (h - 1) == 0


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


def dcgan_filters(image_shape, width=1.0):
    """Filters of the DCGAN nets' conv layers from the image side down to 4x4:
    [64, 128, ...] times `width`, one per halving (3 for 32x32, 4 for 64x64)."""
    halvings = (image_shape[0] // 4).bit_length() - 1
    return [scaled(64 * 2**i, width) for i in range(halvings)]


def has_batch_norm(net):
    """Whether any layer of `net` is a batch normalisation."""
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in net.layers)


def _batch_norm():
    # Synchronized: replicas of a MirroredStrategy normalise with the statistics of the global batch.
    return zoo_layers.BatchNormalization(synchronized=True)


def _dcgan_down(image, image_shape, width=1.0, batch_norm=False, dropout=0.0, sn=lambda layer: layer):
    """The DCGAN trunk of D and encoders: stride-2 convolutions down to 4x4,
    each followed by batch norm (when batch_norm, and never on the first, which
    reads the image), LeakyReLU(0.2) and dropout (when > 0); flattened."""
    h = image
    for i, filters in enumerate(dcgan_filters(image_shape, width)):
        normed = batch_norm and i > 0
        h = sn(layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=not normed))(h)
        if normed:
            h = _batch_norm()(h)
        h = layers.LeakyReLU(0.2)(h)
        if dropout:
            h = zoo_layers.Dropout(dropout)(h)
    return layers.Flatten()(h)


def _dcgan_up(z, image_shape, out_channels, width=1.0, batch_norm=False, **out_kwargs):
    """The DCGAN trunk of G and decoders: z -> 4x4 x filters[-1] (a Dense, then
    reshaped) -> stride-2 transposed convolutions halving the filters -> a last
    one to out_channels; batch norm (when batch_norm) and ReLU after every
    layer but the last, whose layer takes out_kwargs (dtype, name)."""

    def norm_relu(h):
        return layers.ReLU()(_batch_norm()(h) if batch_norm else h)

    filters = dcgan_filters(image_shape, width)
    h = layers.Dense(4 * 4 * filters[-1], use_bias=not batch_norm)(z)
    h = norm_relu(layers.Reshape((4, 4, filters[-1]))(h))  # per-channel statistics, as for a conv layer
    for f in reversed(filters[:-1]):
        h = norm_relu(layers.Conv2DTranspose(f, 4, strides=2, padding="same", use_bias=not batch_norm)(h))
    return layers.Conv2DTranspose(out_channels, 4, strides=2, padding="same", **out_kwargs)(h)


def encoder(kind, image_shape, out_dim, cond_dim=0, hidden=256, name="encoder"):
    """x (and a condition vector) -> out_dim numbers (a code, or posterior parameters).
    conv: D's DCGAN trunk without batch norm where dcgan_sized, else stride-2
    convolutions of 32, 64, ... filters; then Dense hidden -> Dense out_dim."""
    check_kind(kind)
    image, cond = _inputs(image_shape, cond_dim)
    h = image
    if kind == "conv":
        if dcgan_sized(image_shape):
            h = _dcgan_down(h, image_shape)
        else:
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
    """z (joined with any condition, in_dim numbers) -> [H, W, C * channels_per_pixel] raw outputs.
    conv: G's DCGAN trunk without batch norm where dcgan_sized, else Dense
    hidden -> Dense to the smallest feature map -> stride-2 transposed
    convolutions -> Conv 3x3."""
    check_kind(kind)
    h_img, w_img, c_img = image_shape
    out_channels = c_img * channels_per_pixel
    z = keras.Input((in_dim,), name="z")
    if kind == "conv" and dcgan_sized(image_shape):
        out = _dcgan_up(z, image_shape, out_channels, dtype="float32", name="out")
    elif kind == "conv":
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

    conv where dcgan_sized: the DCGAN paper's G (module docstring), batch norm
    and ReLU after every layer but the output. Otherwise the DCGAN of the
    TensorFlow tutorial, generalised: Dense h0*w0*256, BN, LeakyReLU -> ConvT
    128 s1 -> ConvT s2 stages halving the filters -> ConvT C s2 tanh; for
    28x28x1 exactly Dense 7*7*256 -> 128 -> 64 -> 1. Batch norm is
    synchronized so that replicas of a MirroredStrategy normalise with the
    statistics of the global batch."""
    check_kind(kind)
    h_img, w_img, c_img = image_shape
    z = keras.Input((in_dim,), name="z")

    def bn_lrelu(h):
        return layers.LeakyReLU(0.3)(_batch_norm()(h))

    if kind == "conv" and dcgan_sized(image_shape):
        h = _dcgan_up(z, image_shape, c_img, width, batch_norm=True)
    elif kind == "conv":
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
    conditioning="concat", width=1.0, batch_norm=True, feature_output=False, dense_units=0,
):
    """x in [-1, 1] (and a condition or joint vector) -> one logit. `width`
    scales every hidden layer's units or filters.

    conv where dcgan_sized: the DCGAN paper's D (module docstring), batch norm
    after every conv but the first when `batch_norm` (models turn it off for
    levers that need each example's D alone, such as gradient penalties), then
    Dropout when > 0; Flatten -> Dense 1. Otherwise the TensorFlow tutorial's
    DCGAN critic, generalised: Conv 64 s2 -> Conv 128 s2 ..., LeakyReLU and
    Dropout, Flatten -> Dense 1 (never batch norm). A condition vector is
    joined to the flattened features through one hidden layer. dense_units > 0
    adds one more hidden layer, Dense(dense_units) + LeakyReLU(0.2), just
    before the logit (after the condition's join, if any): for conv, the joint
    layer that BiGAN's D(x, z) has and the 28x28 critic lacks.
    spectral_norm wraps every Dense and Conv2D (the logit's and the joint
    layer's too) in zoo.layers.SpectralNormalization (Miyato et al. 2018).

    conditioning="projection" (for a class one-hot y; Miyato and Koyama 2018)
    does not join y to the features phi(x) but adds its projection on them:
    logit = w^T phi(x) + b + (V y)^T phi(x), so every class has its own
    direction in D's feature space from the first step.

    feature_output: the model returns [logit, phi(x)], phi(x) being the
    features the logit layer reads (InfoGAN's Q head shares them)."""
    check_kind(kind)
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning={conditioning!r} is not valid; choose one of: {', '.join(CONDITIONINGS)}")
    project = conditioning == "projection" and cond_dim > 0
    sn = zoo_layers.SpectralNormalization if spectral_norm else (lambda layer: layer)
    image, cond = _inputs(image_shape, cond_dim)
    h = image
    if kind == "conv":
        if dcgan_sized(image_shape):
            h = _dcgan_down(h, image_shape, width, batch_norm, dropout, sn)
        else:
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
    if dense_units:
        h = layers.LeakyReLU(0.2)(sn(layers.Dense(scaled(dense_units, width), name="d_hidden"))(h))
    out = sn(layers.Dense(1, dtype="float32", name="logit"))(h)
    if project:
        embedded = sn(layers.Dense(h.shape[-1], use_bias=False, name="class_embedding"))(cond)
        projection = layers.Dot(axes=1, dtype="float32", name="projection")([embedded, h])
        out = layers.Add(dtype="float32", name="logit_projected")([out, projection])
    return _model(image, cond, [out, h] if feature_output else out, name)


def critic(in_dim, hidden=512, name="critic"):
    """A vector (e.g. a latent code) -> one logit: the AAE's latent discriminator."""
    v = keras.Input((in_dim,), name="v")
    h = v
    for units in (hidden, hidden):
        h = layers.LeakyReLU(0.2)(layers.Dense(units)(h))
    out = layers.Dense(1, dtype="float32", name="logit")(h)
    return keras.Model(v, out, name=name)


def grid_downsamplings(image_shape):
    """Halvings from the image to a code grid (VQ-VAE): at most two, so 28x28
    -> 7x7, 32x32 -> 8x8, 64x64 -> 16x16 (the paper's 4x compression per side)."""
    return downsamplings(image_shape, max_steps=2)


def code_grid(image_shape):
    """(h, w) of the code grid of `image_shape` (grid_downsamplings)."""
    k = grid_downsamplings(image_shape)
    return image_shape[0] // 2**k, image_shape[1] // 2**k


def grid_encoder(image_shape, code_dim, name="encoder"):
    """x -> a grid of vectors [h, w, code_dim] (code_grid): stride-2 4x4
    convolutions of 32, 64 filters with ReLU (the encoders' trunk, kept
    spatial), then a 1x1 convolution to code_dim."""
    image = keras.Input(tuple(image_shape), name="images")
    h = image
    for i in range(grid_downsamplings(image_shape)):
        h = layers.Conv2D(32 * 2**i, 4, strides=2, padding="same", activation="relu")(h)
    out = layers.Conv2D(code_dim, 1, dtype="float32", name="out")(h)
    return keras.Model(image, out, name=name)


def grid_decoder(code_dim, image_shape, name="decoder"):
    """A grid of vectors [h, w, code_dim] -> [H, W, C] raw outputs: a 3x3
    convolution, stride-2 4x4 transposed convolutions halving the filters
    (grid_encoder mirrored), ReLU between, and a 3x3 convolution to C."""
    k = grid_downsamplings(image_shape)
    grid = keras.Input((*code_grid(image_shape), code_dim), name="codes")
    h = layers.Conv2D(32 * 2 ** (k - 1), 3, padding="same", activation="relu")(grid)
    for i in reversed(range(k)):
        h = layers.Conv2DTranspose(32 * 2**i, 4, strides=2, padding="same", activation="relu")(h)
    out = layers.Conv2D(image_shape[-1], 3, padding="same", dtype="float32", name="out")(h)
    return keras.Model(grid, out, name=name)


def gated_pixelcnn(grid_shape, num_codes, filters=64, num_layers=5, first_kernel=5, kernel=3, dropout=0.0,
                   name="prior"):
    """Code indices [h, w] (ints in [0, num_codes)) -> logits [h, w, num_codes]
    of p(c_ij | the codes before (i, j) in raster order): the gated PixelCNN
    (van den Oord et al. 2016) over an embedding of the codes.

    Each layer keeps a vertical stack v (reads the rows above) and a
    horizontal stack h (reads the row to the left), zoo.layers.MaskedConv2D:

        v' = gate(V * v),   h' = h + W (gate(H * h + U (V * v))),   gate(x) = tanh(a) * sigmoid(b)

    with 2 * filters channels before each gate and 1x1 convolutions U, W.
    The first layer (first_kernel x first_kernel, mask A) excludes the
    current position and has no residual; the others (kernel x kernel, mask B)
    include it. Head: ReLU, 1x1 to `filters`, ReLU, 1x1 to num_codes.
    `dropout` > 0: dropout on both gates' outputs in training (as PixelCNN++
    between a residual block's convolutions), against a prior that learns its
    few thousand training grids by heart."""
    codes = keras.Input(tuple(grid_shape), dtype="int32", name="codes")
    x = layers.Embedding(num_codes, filters)(codes)
    v, h = x, x
    for i in range(num_layers):
        first = i == 0
        k = first_kernel if first else kernel
        v_pre = zoo_layers.MaskedConv2D(2 * filters, k, mask="vertical", include_centre=not first)(v)
        h_pre = zoo_layers.MaskedConv2D(2 * filters, k, mask="horizontal", include_centre=not first)(h)
        h_pre = layers.Add()([h_pre, layers.Conv2D(2 * filters, 1)(v_pre)])
        v, h_gated = zoo_layers.Gate()(v_pre), zoo_layers.Gate()(h_pre)
        if dropout:
            v, h_gated = zoo_layers.Dropout(dropout)(v), zoo_layers.Dropout(dropout)(h_gated)
        h_out = layers.Conv2D(filters, 1)(h_gated)
        h = h_out if first else layers.Add()([h, h_out])
    out = layers.Conv2D(filters, 1, activation="relu")(layers.ReLU()(h))
    out = layers.Conv2D(num_codes, 1, dtype="float32", name="logits")(out)
    return keras.Model(codes, out, name=name)
