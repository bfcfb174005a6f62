"""Differentiable augmentation (DiffAugment; Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training").

The same random transformation policy T is applied to every image D sees,
real and fake, in D's updates and in G's: D learns on T(x) and T(G(z)), and G's
gradient passes through T(G(z)) (every transformation here is differentiable in
its input images). The model's samples (generate) are never transformed.

Pure, stateless functions of images x [B, H, W, C] (D's input range, [-1, 1] in
the zoo, as in the reference implementation) and a stateless seed [2]:

- translation: shift each image by up to 1/8 of its height and width (integer
  offsets uniform in [-round(H/8), round(H/8)], likewise for W), pad with zeros;
- cutout: zero a square (rectangle for H != W) of half the image's size at a
  uniformly random centre, clipped at the border;
- color: brightness (x + U(-1/2, 1/2)), saturation (x - mean_c) * U(0, 2) + mean_c
  over the channels, contrast (x - mean) * U(1/2, 3/2) + mean over the image;
  applied when C = 3 only (the identity otherwise: on one channel saturation
  means nothing, and the zoo keeps grey images as they are).

`apply(x, "translation,cutout", seed)` composes them in the order given.

Under tf.distribute every random draw is made for the GLOBAL batch from the
seed and each replica keeps its own slice (base.replica_slice), so N replicas
transform their examples exactly as one device transforms the whole batch.
"""

import tensorflow as tf

from zoo import base

HELP = (
    "DiffAugment policy (Zhao et al. 2020) for every image D sees in training, real and fake: "
    "comma-separated translation, cutout, color (color: 3 channels only); empty: off"
)
TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the image size
CUTOUT_RATIO = 1 / 2  # side of the cut-out square, as a fraction of the image size


def uniform(x, columns, seed):
    """U[0, 1) draws [B, columns] for this replica's B examples of x: its slice of
    one draw [B * N, columns] for the global batch."""
    draw = lambda n: tf.random.stateless_uniform([n, columns], seed)  # noqa: E731
    return tf.cast(base.replica_slice(draw, tf.shape(x)[0]), x.dtype)


def _randint(u, low, high):
    """Integers uniform on low..high (inclusive) from U[0, 1) draws u."""
    k = tf.cast(tf.floor(tf.cast(u, tf.float32) * (high - low + 1)), tf.int32)
    return tf.minimum(k, high - low) + low


def translation_offsets(x, seed, ratio=TRANSLATION_RATIO):
    """The per-example integer shifts (dy [B], dx [B]) `translation` uses."""
    h, w = x.shape[1], x.shape[2]
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    u = uniform(x, 2, seed)
    return _randint(u[:, 0], -sh, sh), _randint(u[:, 1], -sw, sw)


def translation(x, seed, ratio=TRANSLATION_RATIO):
    """y[b, i, j] = x[b, i - dy_b, j - dx_b], 0 where that falls outside the image;
    dy uniform on -round(ratio H)..round(ratio H), dx likewise (ratio = 1/8)."""
    h, w = x.shape[1], x.shape[2]
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    dy, dx = translation_offsets(x, seed, ratio)
    padded = tf.pad(x, [[0, 0], [sh, sh], [sw, sw], [0, 0]])
    rows = tf.range(h)[None, :] - dy[:, None] + sh  # [B, H] rows of the padded image
    cols = tf.range(w)[None, :] - dx[:, None] + sw
    y = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W + 2 sw, C]
    return tf.gather(y, cols, axis=2, batch_dims=1)


def cutout_mask(x, seed, ratio=CUTOUT_RATIO):
    """The [B, H, W, 1] mask `cutout` multiplies by: 0 on the square, 1 elsewhere."""
    h, w = x.shape[1], x.shape[2]
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    u = uniform(x, 2, seed)
    # The square's centre: uniform on 0..H - 1 (0..H for an even side), as the reference.
    top = _randint(u[:, 0], 0, h - ch % 2) - ch // 2
    left = _randint(u[:, 1], 0, w - cw % 2) - cw // 2
    i, j = tf.range(h)[None, :], tf.range(w)[None, :]
    in_rows = (i >= top[:, None]) & (i < top[:, None] + ch)  # [B, H]
    in_cols = (j >= left[:, None]) & (j < left[:, None] + cw)  # [B, W]
    cut = tf.logical_and(in_rows[:, :, None], in_cols[:, None, :])
    return tf.cast(tf.logical_not(cut), x.dtype)[..., None]


def cutout(x, seed, ratio=CUTOUT_RATIO):
    """x with a square of side round(ratio H) x round(ratio W) zeroed at a uniform
    random centre per example (ratio = 1/2); the square is clipped at the border."""
    return x * cutout_mask(x, seed, ratio)


def color(x, seed):
    """Brightness, saturation and contrast, one draw of each per example:

        x <- x + (a - 1/2),  x <- (x - mean_c x) 2b + mean_c x,  x <- (x - mean x)(c + 1/2) + mean x

    with a, b, c ~ U(0, 1), mean_c over the channels, mean over the whole image.
    The identity unless C = 3."""
    if x.shape[-1] != 3:
        return x
    u = uniform(x, 3, seed)[:, None, None, :]  # [B, 1, 1, 3]
    x = x + (u[..., 0:1] - 0.5)
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (x - mean) * (2.0 * u[..., 1:2]) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * (u[..., 2:3] + 0.5) + mean


FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


def parse(policy):
    """The names of a comma-separated policy ("" -> ()); ValueError for an unknown one."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in names if p not in FUNCTIONS]
    if unknown:
        raise ValueError(
            f"augment={policy!r}: unknown augmentation {unknown[0]!r}; "
            f"valid: a comma-separated list of {', '.join(FUNCTIONS)} (or empty for none)"
        )
    return names


def apply_stream(x, policy, seed, stream):
    """apply(x, policy, seed folded with `stream`): the augmentation of one use
    in a train step (real or fake batch); x itself when the policy is empty."""
    if not policy:
        return x
    return apply(x, policy, tf.random.experimental.stateless_fold_in(seed, stream))


def apply(x, policy, seed):
    """T(x): the augmentations of `policy` (a string or parsed names) in order,
    each with its own stream of `seed`; x itself when the policy is empty."""
    names = parse(policy) if isinstance(policy, str) else tuple(policy)
    for k, name in enumerate(names):
        x = FUNCTIONS[name](x, tf.random.experimental.stateless_fold_in(seed, k))
    return x
