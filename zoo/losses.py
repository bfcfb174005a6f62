"""Adversarial losses as pure functions of discriminator logits (and the
terms that adversarial models add to them), per example.

D(x) = sigmoid(logit). Every function returns one value per example (shape [B]);
the models average them over the global batch. Pick a pair with `get(name)`.
"""

import math
from collections.abc import Callable

import tensorflow as tf

from zoo.base import TensorLike


def _flat(logits):
    return tf.reshape(tf.cast(logits, tf.float32), [-1])


def _rows(x):
    x = tf.convert_to_tensor(x)
    return tf.reshape(x, [tf.shape(x)[0], -1])


def minimax_discriminator_loss(real_logits: TensorLike, fake_logits: TensorLike, real_target: float = 1.0) -> tf.Tensor:
    """-[t log D(x) + (1 - t) log(1 - D(x))] - log(1 - D(G(z))).

    With t = 1 this is minus the value V(G, D) = E log D(x) + E log(1 - D(G(z)))
    of Goodfellow et al.; t < 1 is one-sided label smoothing (Salimans et al.
    2016), which moves the optimal D to t p_data / (p_data + p_g).

    Args:
      real_logits: D's logits of real images, [B] or [B, 1].
      fake_logits: D's logits of generated images, [B] or [B, 1].
      real_target: t, D's target for real images (1: none; < 1: one-sided smoothing).

    Returns:
      The discriminator's loss per example, float32 [B]."""
    real = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(_flat(real_logits)), real_target), logits=_flat(real_logits)
    )
    fake = tf.nn.softplus(_flat(fake_logits))  # -log(1 - sigmoid(l)) = softplus(l)
    return real + fake


def minimax_generator_loss(fake_logits: TensorLike) -> tf.Tensor:
    """log(1 - D(G(z))): the generator's side of the minimax game (saturates
    when D rejects the fakes confidently; Goodfellow et al. 2014).

    Args:
      fake_logits: D's logits of generated images, [B] or [B, 1].

    Returns:
      The generator's loss per example, float32 [B]."""
    return -tf.nn.softplus(_flat(fake_logits))


def non_saturating_generator_loss(fake_logits: TensorLike) -> tf.Tensor:
    """-log D(G(z)): same fixed point as the minimax loss, strong gradients
    early in training (Goodfellow et al. 2014, section 3).

    Args:
      fake_logits: D's logits of generated images, [B] or [B, 1].

    Returns:
      The generator's loss per example, float32 [B]."""
    return tf.nn.softplus(-_flat(fake_logits))  # -log sigmoid(l) = softplus(-l)


def least_squares_discriminator_loss(real_logits: TensorLike, fake_logits: TensorLike, real_target: float = 1.0) -> tf.Tensor:
    """1/2 (D(x) - t)^2 + 1/2 D(G(z))^2 on the raw outputs (LSGAN, Mao et al. 2017).

    Args:
      real_logits: D's logits of real images, [B] or [B, 1].
      fake_logits: D's logits of generated images, [B] or [B, 1].
      real_target: t, D's target for real images (1: none; < 1: one-sided smoothing).

    Returns:
      The discriminator's loss per example, float32 [B]."""
    return 0.5 * tf.square(_flat(real_logits) - real_target) + 0.5 * tf.square(_flat(fake_logits))


def least_squares_generator_loss(fake_logits: TensorLike) -> tf.Tensor:
    """1/2 (D(G(z)) - 1)^2 (LSGAN, Mao et al. 2017).

    Args:
      fake_logits: D's logits of generated images, [B] or [B, 1].

    Returns:
      The generator's loss per example, float32 [B]."""
    return 0.5 * tf.square(_flat(fake_logits) - 1.0)


def wasserstein_discriminator_loss(real_logits: TensorLike, fake_logits: TensorLike, real_target: float = 1.0) -> tf.Tensor:
    """D(G(z)) - D(x): the critic's side of the Wasserstein-1 dual (Arjovsky et
    al. 2017); add `gradient_penalty` to keep the critic 1-Lipschitz. real_target
    is ignored (no labels to smooth).

    Args:
      real_logits: D's logits of real images, [B] or [B, 1].
      fake_logits: D's logits of generated images, [B] or [B, 1].
      real_target: ignored (for the same signature as the other losses).

    Returns:
      The discriminator's loss per example, float32 [B]."""
    return _flat(fake_logits) - _flat(real_logits)


def wasserstein_generator_loss(fake_logits: TensorLike) -> tf.Tensor:
    """-D(G(z)): the generator's side of the Wasserstein-1 dual (Arjovsky et al. 2017).

    Args:
      fake_logits: D's logits of generated images, [B] or [B, 1].

    Returns:
      The generator's loss per example, float32 [B]."""
    return -_flat(fake_logits)


def hinge_discriminator_loss(real_logits: TensorLike, fake_logits: TensorLike, real_target: float = 1.0) -> tf.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) on the raw outputs: the hinge
    loss of the geometric GAN (Lim and Ye 2017), used with spectral
    normalisation by Miyato et al. 2018. real_target is ignored (the margin
    plays the part of the labels).

    Args:
      real_logits: D's logits of real images, [B] or [B, 1].
      fake_logits: D's logits of generated images, [B] or [B, 1].
      real_target: ignored (for the same signature as the other losses).

    Returns:
      The discriminator's loss per example, float32 [B]."""
    return tf.nn.relu(1.0 - _flat(real_logits)) + tf.nn.relu(1.0 + _flat(fake_logits))


def hinge_generator_loss(fake_logits: TensorLike) -> tf.Tensor:
    """-D(G(z)) (Lim and Ye 2017; Miyato et al. 2018).

    Args:
      fake_logits: D's logits of generated images, [B] or [B, 1].

    Returns:
      The generator's loss per example, float32 [B]."""
    return -_flat(fake_logits)


def gradient_penalty(
    critic: Callable[[tf.Tensor], tf.Tensor], real: TensorLike, fake: TensorLike, seed: TensorLike, weight: float = 10.0
) -> tf.Tensor:
    """weight * (||grad_x' D(x')||_2 - 1)^2 per example, x' = u x + (1 - u) G(z),
    u ~ U(0, 1) per example (WGAN-GP, Gulrajani et al. 2017).

    Args:
      critic: maps a batch of inputs to logits.
      real, fake: batches of the critic's inputs, [B, ...] each.
      seed: a stateless seed [2] for u.
      weight: lambda, 10 in the paper.

    Returns:
      The penalty per example, float32 [B], differentiable in the critic's weights."""
    shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], 0)
    u = tf.random.stateless_uniform(shape, seed)
    mixed = u * real + (1.0 - u) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        logits = critic(mixed)
    grads = _rows(tape.gradient(logits, mixed))
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-12)
    return weight * tf.square(norm - 1.0)


def r1_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: TensorLike, weight: float) -> tf.Tensor:
    """weight / 2 * ||grad_x D(x)||_2^2 per example, on real data x: the R1
    regulariser of Mescheder et al. 2018 ("Which Training Methods for GANs do
    actually Converge?"), gamma = weight. `critic` maps a batch of inputs to
    logits; the penalty is differentiable in the critic's weights."""
    real = tf.cast(real, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(real)
        logits = critic(real)
    grads = _rows(tape.gradient(logits, real))
    return 0.5 * weight * tf.reduce_sum(tf.square(grads), axis=1)


def mutual_information_loss(
    category_logits: TensorLike, categories: TensorLike, code_means: TensorLike, codes: TensorLike
) -> tf.Tensor:
    """-log Q(c | G(z, c)) per example, with Q a categorical over the discrete
    code and a Gaussian of unit variance over each continuous code:

        L_I = -log softmax(l)_c_cat + sum_j 1/2 (c_j - mu_j)^2   (+ constants dropped)

    InfoGAN (Chen et al. 2016, eq. 5): H(c) - L_I <= I(c; G(z, c)) is the
    variational lower bound on the mutual information between the codes and
    the generated image, which G and Q (D's auxiliary head) both maximise.
    With unit variance the Gaussian term is the official implementation's
    fixed-std choice; H(c) (log K for a uniform categorical) is a constant.

    Args:
      category_logits: Q's logits of the categorical code, [B, K] (K may be 0).
      categories: the categorical code the fakes were drawn with, int [B].
      code_means: Q's means of the continuous codes, [B, C] (C may be 0).
      codes: the continuous codes the fakes were drawn with, [B, C].

    Returns:
      L_I per example, float32 [B]."""
    category_logits = tf.cast(category_logits, tf.float32)
    loss = 0.5 * tf.reduce_sum(tf.square(tf.cast(codes, tf.float32) - tf.cast(code_means, tf.float32)), axis=1)
    if category_logits.shape[-1]:
        loss += tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(categories, tf.int32), logits=category_logits
        )
    return loss


def feature_reconstruction_loss(real_features: TensorLike, reconstructed_features: TensorLike) -> tf.Tensor:
    """-log N(Dis_l(x) | Dis_l(x~), I) per example: the VAE-GAN's reconstruction
    term, a Gaussian of unit variance in the feature space of a hidden layer l
    of the discriminator (Larsen et al. 2016, eq. 8):

        L_llike = 1/2 sum_j (f_j - f~_j)^2 + d/2 log 2 pi,   f = Dis_l(x), f~ = Dis_l(x~),

    d the number of features.

    Args:
      real_features: Dis_l(x), [B, d] (or [B, ...], flattened).
      reconstructed_features: Dis_l(x~) of the reconstructions, the same shape.

    Returns:
      L_llike per example, float32 [B]."""
    f = tf.cast(_rows(real_features), tf.float32)
    f_rec = tf.cast(_rows(reconstructed_features), tf.float32)
    d = tf.cast(tf.shape(f)[1], tf.float32)
    return 0.5 * tf.reduce_sum(tf.square(f - f_rec), axis=1) + 0.5 * d * math.log(2.0 * math.pi)


LOSSES = {
    "non_saturating": (minimax_discriminator_loss, non_saturating_generator_loss),
    "minimax": (minimax_discriminator_loss, minimax_generator_loss),
    "least_squares": (least_squares_discriminator_loss, least_squares_generator_loss),
    "wasserstein_gp": (wasserstein_discriminator_loss, wasserstein_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
}


# Losses whose discriminator (critic) loss takes the gradient penalty of
# Gulrajani et al. on random mixes of real and fake inputs.
WITH_GRADIENT_PENALTY = frozenset({"wasserstein_gp"})


def has_gradient_penalty(name: str) -> bool:
    """Whether the loss `name` adds gradient_penalty to the discriminator's loss."""
    return name in WITH_GRADIENT_PENALTY


def get(name: str) -> tuple[Callable, Callable]:
    """(discriminator loss, generator loss) registered as `name`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[name]
