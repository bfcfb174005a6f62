"""tfp distributions of the latent-variable models: posteriors q(z|x) (diagonal,
banded, recurrent), priors p(z) (N(0, I), a learned Gaussian mixture, a learned
recurrent Gaussian) and decoder likelihoods
p(x|z). Plain tfd objects built from network outputs, inside Keras 3 models
(tfp.layers needs the old tf_keras, so it is not used); the discretised
logistic is a small class of its own (DiscretizedLogistic), on the images'
[0, 1] scale, in log space as PixelCNN++ writes it (tfp's
QuantizedDistribution counts integer levels)."""

import functools
import importlib
import math

import tensorflow as tf

from zoo import base


@functools.cache
def tfd():
    """tfp.distributions, imported on first use: importing tensorflow_probability
    takes ~2 s (it loads tf_keras), which processes that build no distribution
    (the GANs, a normal-prior AAE, export.run's verify child) need not pay."""
    return importlib.import_module("tensorflow_probability").distributions


LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "discretized_logistic")
# Likelihoods that are normalised densities on grey levels in [0, 1] (or on R):
# their ELBO and IWAE bound log p(x). The Bernoulli pmf is normalised only on
# binary images (binarize="dynamic"); on grey levels its bound is not a log-likelihood.
NORMALISED_ON_GREY_LEVELS = ("continuous_bernoulli", "gaussian")
# Likelihoods that are pmfs over the 256 levels k / 255 of 8-bit grey: their
# bounds are log P(x) of the quantised images, reported in bits per dimension.
DISCRETE_8BIT = ("discretized_logistic",)
LEVELS = 256
# Decoder outputs per pixel and channel (nets.decoder's channels_per_pixel):
# the discretised logistic reads a location and a log-scale.
OUTPUTS_PER_PIXEL = {"discretized_logistic": 2}
# PixelCNN++ clamps log s at -7 for data in [-1, 1]; on [0, 1] that is -7 - ln 2,
# here -8: a pixel can still put 0.99 of its mass on one interior level.
LOG_SCALE_MIN = -8.0
BINARIZATIONS = ("none", "dynamic")
POSTERIORS = ("diagonal", "banded", "recurrent")
PRIORS = ("normal", "gmm", "recurrent")
# Priors that are one Gaussian: KL(q || p) is analytic for every posterior (all Gaussian).
GAUSSIAN_PRIORS = ("normal", "recurrent")
MIN_SCALE = 1e-4
UNIT_RAW_SCALE = math.log(math.expm1(1.0 - MIN_SCALE))  # positive_scale's inverse at 1: learned scales start at 1


def positive_scale(raw):
    """sigma = softplus(raw) + 1e-4: positive and smooth, the scales of every
    Gaussian here."""
    return tf.nn.softplus(raw) + MIN_SCALE


def diagonal_posterior(params):
    """q(z|x) = N(mu, diag(sigma^2)) from params = [mu, s] (2J numbers per row),
    sigma = softplus(s) + 1e-4 (positive and smooth)."""
    mu, s = tf.split(params, 2, axis=-1)
    return tfd().MultivariateNormalDiag(loc=mu, scale_diag=positive_scale(s))


def posterior_size(kind, latent_dim):
    """Numbers per row the encoder outputs for a posterior of `kind`:
    diagonal J means + J scales = 2J; banded and recurrent J means + J scales +
    J - 1 sub-diagonal entries (of L, or the coefficients a_i) = 3J - 1."""
    if kind == "diagonal":
        return 2 * latent_dim
    if kind in ("banded", "recurrent"):
        return 3 * latent_dim - 1
    raise ValueError(f"posterior={kind!r} is not valid; choose one of: {', '.join(POSTERIORS)}")


def posterior(kind, params):
    """q(z|x) of `kind` from the encoder's outputs (see diagonal_posterior,
    banded_posterior, recurrent_posterior)."""
    return {"diagonal": diagonal_posterior, "banded": banded_posterior, "recurrent": recurrent_posterior}[kind](params)


def split_bidiagonal(params):
    """(mu, s, c) from params = [mu, s, c] (3J - 1 numbers per row): J means,
    J raw scales and J - 1 sub-diagonal numbers, the banded and recurrent
    posteriors' layout."""
    params = tf.convert_to_tensor(params)
    j = (params.shape[-1] + 1) // 3
    return tf.split(params, [j, j, j - 1], axis=-1)


def lower_bidiagonal(diagonal, subdiagonal):
    """The [..., J, J] matrix with `diagonal` [..., J] on its diagonal and
    `subdiagonal` [..., J - 1] just below, zero elsewhere. For J = 1 the empty
    sub-diagonal is left out: the gradient of tf.linalg.diag(k=-1) fails on 1 x 1."""
    matrix = tf.linalg.diag(diagonal)
    if diagonal.shape[-1] > 1:
        matrix += tf.linalg.diag(subdiagonal, k=-1)
    return matrix


def banded_scale(params):
    """L [..., J, J] of the banded posterior from params = [mu, s, b] (3J - 1
    numbers per row): lower bidiagonal, L_ii = softplus(s_i) + 1e-4 (positive,
    so L is a Cholesky factor), L_{i+1,i} = b_i, zero elsewhere."""
    _, s, b = split_bidiagonal(params)
    return lower_bidiagonal(positive_scale(s), b)


def banded_posterior(params):
    """q(z|x) = N(mu, L L^T), L = banded_scale(params): a full Gaussian whose
    covariance L L^T is tridiagonal, so neighbouring latents correlate
    (Sigma_ii = L_ii^2 + L_{i,i-1}^2, Sigma_{i+1,i} = L_{i+1,i} L_ii), at 2J - 1
    scale parameters instead of J for the diagonal posterior."""
    mu = split_bidiagonal(params)[0]
    return tfd().MultivariateNormalTriL(loc=mu, scale_tril=banded_scale(params))


def recurrent_gaussian(loc, raw_scales, coefficients):
    """The lecture notes' "diagonal + 1" recurrent Gaussian over J latents:

        z_1 = mu_1 + s_1 e_1,  z_i = mu_i + a_i (z_{i-1} - mu_{i-1}) + s_i e_i,  e ~ N(0, I),

    mu = loc [..., J], s = softplus(raw_scales) + 1e-4 [..., J], a = coefficients
    [..., J - 1] (a_2..a_J). In matrices B (z - mu) = S e with B unit lower
    bidiagonal (B_{i,i-1} = -a_i) and S = diag(s): z = mu + B^-1 S e, covariance
    B^-1 S^2 B^-T (dense: each latent depends on all earlier ones) and precision
    B^T S^-2 B, tridiagonal. A tfd.MultivariateNormalLinearOperator with scale
    the LinearOperator B^-1 S: sampling solves B (z - mu) = S e (the recursion,
    reparameterised), log_prob applies B (exactly the precision form
    sum_i ((d_i - a_i d_{i-1}) / s_i)^2, d = z - mu) and log det B^-1 S = sum log s_i.
    B is held dense, O(J^2) a row (cheap at the zoo's J); tfd.kl_divergence
    to N(0, I) or to another recurrent Gaussian is analytic."""
    scales = positive_scale(raw_scales)
    b = tf.linalg.LinearOperatorLowerTriangular(
        lower_bidiagonal(tf.ones_like(scales), -tf.convert_to_tensor(coefficients)), is_non_singular=True
    )
    s = tf.linalg.LinearOperatorDiag(scales, is_non_singular=True)
    scale = tf.linalg.LinearOperatorComposition([tf.linalg.LinearOperatorInversion(b), s], is_non_singular=True)
    return tfd().MultivariateNormalLinearOperator(loc=loc, scale=scale)


def recurrent_posterior(params):
    """q(z|x) = recurrent_gaussian(mu, s, a) from params = [mu, s, a] (3J - 1
    numbers per row): as many as the banded posterior, but a tridiagonal
    precision (neighbours conditionally dependent) instead of a tridiagonal covariance."""
    return recurrent_gaussian(*split_bidiagonal(params))


def standard_normal_prior(latent_dim):
    """p(z) = N(0, I)."""
    return tfd().MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


def mixture_prior(logits, means, raw_scales):
    """The learned prior p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2) with
    pi = softmax(logits) [K], mu_k = means [K, J], sigma_k = softplus(raw_scales) + 1e-4 [K, J]."""
    return tfd().MixtureSameFamily(
        mixture_distribution=tfd().Categorical(logits=logits),
        components_distribution=tfd().MultivariateNormalDiag(
            loc=means, scale_diag=positive_scale(raw_scales)
        ),
    )


def kl_to_prior(posterior, prior):
    """KL(q(z|x) || p(z)) per example: analytic via tfd().kl_divergence, for any
    Gaussian q (diagonal, banded or recurrent) against a Gaussian prior N(m, P):
    1/2 (tr(P^-1 Sigma) + (mu - m)^T P^-1 (mu - m) - J + log det P - log det Sigma),
    which against N(0, I) for the diagonal q is -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)."""
    return tfd().kl_divergence(posterior, prior)


def kl_per_dimension(posterior):
    """KL(N(mu_j, sigma_j^2) || N(0, 1)) = 1/2 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)
    per latent dimension [B, J] of a diagonal Gaussian posterior; their sum is
    kl_to_prior's KL to N(0, I)."""
    mu, sigma = posterior.mean(), posterior.stddev()
    return 0.5 * (tf.square(mu) + tf.square(sigma) - 1.0) - tf.math.log(sigma)


def monte_carlo_kl(posterior, prior, z):
    """KL(q(z|x) || p(z)) per example estimated from one sample: log q(z|x) - log p(z)
    at z ~ q(z|x). For priors without an analytic KL (the Gaussian mixture).
    Unbiased; pass the reparameterised z of the reconstruction term, so the
    ELBO is estimated at a single sample and its gradient flows through z."""
    return posterior.log_prob(z) - prior.log_prob(z)


def likelihood(kind, outputs, log_scale=None):
    """p(x|z) over whole images (H, W, C are one event).

    bernoulli: outputs are logits; log p(x|z) = sum x log p + (1 - x) log(1 - p),
      the continuous cross-entropy for grey levels in [0, 1].
    continuous_bernoulli: outputs are logits of lambda; the normalised density
      on [0, 1] (Loaiza-Ganem and Cunningham 2019): log p(x|z) = sum x log lambda
      + (1 - x) log(1 - lambda) + log C(lambda), C(lambda) = 2 artanh(1 - 2 lambda)
      / (1 - 2 lambda) (2 at lambda = 1/2), so that int_0^1 p(x) dx = 1;
    gaussian: outputs are means (squashed to [0, 1] by a sigmoid);
      log p(x|z) = sum log N(x; mean, exp(log_scale)^2);
    discretized_logistic: outputs are [mu, log s] (2 C channels, see
      OUTPUTS_PER_PIXEL), log s clamped at LOG_SCALE_MIN; a pmf over the 256
      levels k / 255 (DiscretizedLogistic)."""
    if kind == "bernoulli":
        return tfd().Independent(tfd().Bernoulli(logits=outputs, dtype=tf.float32), 3)
    if kind == "continuous_bernoulli":
        return tfd().Independent(tfd().ContinuousBernoulli(logits=outputs, dtype=tf.float32), 3)
    if kind == "gaussian":
        scale = tf.exp(log_scale) + MIN_SCALE
        return tfd().Independent(tfd().Normal(loc=tf.sigmoid(outputs), scale=scale), 3)
    if kind == "discretized_logistic":
        return DiscretizedLogistic(*tf.split(outputs, 2, axis=-1))
    raise ValueError(f"likelihood={kind!r} is not valid; choose one of: {', '.join(LIKELIHOODS)}")


def discretized_logistic_log_pmf(images, loc, raw_log_scale):
    """log P(x) per pixel of the discretised logistic (Kingma et al. 2016, IAF;
    Salimans et al. 2017, PixelCNN++) over the levels k / 255, x read as its
    nearest level k:

        P(k) = sigmoid(a) - sigmoid(b),  a = (k / 255 + 1/510 - mu) / s,  b = (k / 255 - 1/510 - mu) / s,

    the mass of Logistic(mu, s) on the level's bin; level 0 takes the lower tail
    (P = sigmoid(a)), level 255 the upper (P = 1 - sigmoid(b)), so the 256 sum to 1.
    In log space, stable for any a, b: log(sigmoid(a) - sigmoid(b)) =
    -softplus(-a) - softplus(b) + log(1 - exp(-(a - b))), a - b = 1 / (255 s).

    Args:
      images: grey levels in [0, 1] [..., C].
      loc: mu [..., C] (unconstrained: a mean past 0 or 1 piles mass on the edge level).
      raw_log_scale: log s before the clamp at LOG_SCALE_MIN [..., C].
    Returns:
      log P(x) [..., C], in nats."""
    top = LEVELS - 1
    k = tf.round(tf.clip_by_value(tf.cast(images, loc.dtype), 0.0, 1.0) * top)
    inv_s = tf.exp(-tf.maximum(raw_log_scale, LOG_SCALE_MIN))
    centred = k / top - loc
    a, b = (centred + 0.5 / top) * inv_s, (centred - 0.5 / top) * inv_s
    inside = (k > 0) & (k < top)
    # Each edge drops the term of the tail it takes; where() picks finite values only, so gradients stay finite.
    return (
        -tf.where(k < top, tf.nn.softplus(-a), 0.0)
        - tf.where(k > 0, tf.nn.softplus(b), 0.0)
        + tf.where(inside, tf.math.log(-tf.math.expm1(-inv_s / top)), 0.0)
    )


def discretized_logistic_mean(loc, raw_log_scale):
    """E[x] of the discretised logistic, exactly: x takes the levels k / 255, so
    E[x] = 1/255 sum_{k=1}^{255} P(x >= k / 255) = 1/255 sum_k sigmoid((mu - (k - 1/2) / 255) / s),
    one pass per level (a loop, so memory stays that of one image batch). Not mu:
    near 0 and 1 the edge levels' tails pull it inwards."""
    top = LEVELS - 1
    inv_s = tf.exp(-tf.maximum(raw_log_scale, LOG_SCALE_MIN))
    edges = (tf.range(1, LEVELS, dtype=loc.dtype) - 0.5) / top
    total = tf.foldl(lambda acc, edge: acc + tf.sigmoid((loc - edge) * inv_s), edges, tf.zeros_like(loc))
    return total / top


class DiscretizedLogistic:
    """p(x|z) over whole images (H, W, C one event), a pmf over the levels
    k / 255 of every pixel (discretized_logistic_log_pmf). Only what the zoo
    reads of a likelihood: log_prob and mean."""

    def __init__(self, loc, raw_log_scale):
        self.loc = tf.cast(loc, tf.float32)
        self.raw_log_scale = tf.cast(raw_log_scale, tf.float32)

    def log_prob(self, images):
        """log P(x) per image [B], in nats: the sum over pixels and channels."""
        return tf.reduce_sum(discretized_logistic_log_pmf(images, self.loc, self.raw_log_scale), axis=[-3, -2, -1])

    def mean(self):
        return discretized_logistic_mean(self.loc, self.raw_log_scale)


def quantize(images):
    """The images at their nearest 8-bit level k / 255: what a discretised
    likelihood scores (mnist is already k / 255; resized images and the 8x8
    digits, k / 16, are not)."""
    top = LEVELS - 1
    return tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0) * top) / top


def bits_per_dimension(log_likelihood, dimensions):
    """-log P(x) / (D ln 2): a bound on log P(x) in nats per image turned into
    bits per dimension, D = H W C, the unit of likelihoods of 8-bit images."""
    return -log_likelihood / (dimensions * math.log(2.0))


def bernoulli_nll(images, logits):
    """-log p(x|z) of the Bernoulli likelihood per image, in nats:
    sum_pixels -[x log p + (1 - x) log(1 - p)], p = sigmoid(logits)."""
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
    return tf.reduce_sum(per_pixel, axis=[1, 2, 3])


def likelihood_mean(outputs, kind="bernoulli"):
    """E[x|z] in [0, 1], the image a decoder shows for z: sigmoid(outputs) for
    the Bernoulli (its mean) and the Gaussian (its squashed mean); for the
    continuous Bernoulli its mean lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)),
    which is not lambda; for the discretised logistic its exact mean over the
    256 levels (discretized_logistic_mean), which is not mu."""
    if kind == "continuous_bernoulli":
        return tfd().ContinuousBernoulli(logits=tf.cast(outputs, tf.float32)).mean()
    if kind == "discretized_logistic":
        return likelihood(kind, outputs).mean()
    return tf.sigmoid(outputs)


def binarize(images, seed):
    """Dynamic binarisation (the VAE and IWAE papers' protocol on MNIST): each
    pixel x in [0, 1] becomes 1 with probability x, else 0, a fresh draw per
    `seed`. This replica's rows of one draw for the global batch (as the noise is),
    so N replicas binarise as one device does."""
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)[1:]
    u = base.replica_slice(
        lambda n: tf.random.stateless_uniform(tf.concat([[n], shape], 0), seed), tf.shape(images)[0]
    )
    return tf.cast(u < images, tf.float32)


def importance_weighted_bound(posterior, log_joint, k, seed=None):
    """The IWAE bound (Burda et al. 2016) per example, in nats:

        log p(x) >= E[log 1/K sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x),

    equal to the ELBO for K = 1, non-decreasing in K and tending to log p(x).
    `log_joint(z)` maps samples [K, B, J] to log p(x, z) [K, B]."""
    z = posterior.sample(k, seed=seed)
    return log_mean_exp(log_joint(z) - posterior.log_prob(z))


def log_mean_exp(log_w):
    """log (1/K) sum_k exp(log w_k) over the first axis ([K, B] -> [B]), without
    overflow (logsumexp): the IWAE bound of the log importance weights."""
    return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(tf.cast(tf.shape(log_w)[0], log_w.dtype))
