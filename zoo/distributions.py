"""tfp distributions of the latent-variable models: posteriors q(z|x), priors p(z)
and decoder likelihoods p(x|z). Plain tfd objects built from network outputs,
inside Keras 3 models (tfp.layers needs the old tf_keras, so it is not used)."""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

LIKELIHOODS = ("bernoulli", "gaussian")
MIN_SCALE = 1e-4


def diagonal_posterior(params):
    """q(z|x) = N(mu, diag(sigma^2)) from params = [mu, s] (2J numbers per row),
    sigma = softplus(s) + 1e-4 (positive and smooth)."""
    mu, s = tf.split(params, 2, axis=-1)
    return tfd.MultivariateNormalDiag(loc=mu, scale_diag=tf.nn.softplus(s) + MIN_SCALE)


def standard_normal_prior(latent_dim):
    """p(z) = N(0, I)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


def kl_to_prior(posterior, prior):
    """KL(q(z|x) || p(z)) per example: analytic via tfd.kl_divergence (for a
    Gaussian vs N(0, I): -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2))."""
    return tfd.kl_divergence(posterior, prior)


def likelihood(kind, outputs, log_scale=None):
    """p(x|z) over whole images (H, W, C are one event).

    bernoulli: outputs are logits; log p(x|z) = sum x log p + (1 - x) log(1 - p),
      the continuous cross-entropy for grey levels in [0, 1].
    gaussian: outputs are means (squashed to [0, 1] by a sigmoid);
      log p(x|z) = sum log N(x; mean, exp(log_scale)^2)."""
    if kind == "bernoulli":
        return tfd.Independent(tfd.Bernoulli(logits=outputs, dtype=tf.float32), 3)
    if kind == "gaussian":
        scale = tf.exp(log_scale) + MIN_SCALE
        return tfd.Independent(tfd.Normal(loc=tf.sigmoid(outputs), scale=scale), 3)
    raise ValueError(f"likelihood={kind!r} is not valid; choose one of: {', '.join(LIKELIHOODS)}")


def bernoulli_nll(images, logits):
    """-log p(x|z) of the Bernoulli likelihood per image, in nats:
    sum_pixels -[x log p + (1 - x) log(1 - p)], p = sigmoid(logits)."""
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
    return tf.reduce_sum(per_pixel, axis=[1, 2, 3])


def likelihood_mean(outputs):
    """E[x|z] in [0, 1], the image a decoder shows for z: sigmoid(outputs) for
    both likelihoods (the Bernoulli mean of logits, the squashed Gaussian mean)."""
    return tf.sigmoid(outputs)


def importance_weighted_bound(posterior, log_joint, k, seed=None):
    """The IWAE bound (Burda et al. 2016) per example, in nats:

        log p(x) >= E[log 1/K sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x),

    equal to the ELBO for K = 1, non-decreasing in K and tending to log p(x).
    `log_joint(z)` maps samples [K, B, J] to log p(x, z) [K, B]."""
    z = posterior.sample(k, seed=seed)
    log_w = log_joint(z) - posterior.log_prob(z)
    return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(tf.cast(k, log_w.dtype))
