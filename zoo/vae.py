"""The variational autoencoder and its conditional twin.

Maximises the ELBO  E_q[log p(x|z)] - KL(q(z|x) || p(z))  with q(z|x) a tfp
MultivariateNormalDiag sampled by reparameterisation, p(z) = N(0, I) and the KL
analytic (tfd.kl_divergence). The loss is the negative ELBO per example, in nats.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import base, distributions, nets
from zoo.base import option


@dataclasses.dataclass
class VAEConfig:
    latent_dim: int = option(16, "size of the latent code z")
    net: str = option("conv", "encoder/decoder architecture", nets.KINDS)
    likelihood: str = option("bernoulli", "decoder likelihood p(x|z)", distributions.LIKELIHOODS)
    gaussian_scale: float = option(0.1, "std of the Gaussian likelihood (its start value if learned)")
    learn_scale: bool = option(False, "learn the Gaussian likelihood's std, one per channel")


@keras.saving.register_keras_serializable(package="genzoo")
class VAE(base.ZooModel):
    """q(z|x) = N(mu(x), diag sigma(x)^2), p(z) = N(0, I), p(x|z) Bernoulli or Gaussian.

    loss = -ELBO = -log p(x|z) + KL(q(z|x) || p(z)),  z = mu + sigma * eps."""

    Config = VAEConfig
    tracked = ("loss", "reconstruction", "kl")
    signature_names = ("generate", "encode", "decode", "reconstruct")

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        cond = self.num_classes if self.conditional else 0
        self.encoder = nets.encoder(c.net, self.image_shape, 2 * self.latent_dim, cond_dim=cond)
        self.decoder = nets.decoder(c.net, self.latent_dim + cond, self.image_shape)
        self.log_scale = self.add_weight(
            shape=(self.image_shape[-1],),
            initializer=keras.initializers.Constant(math.log(c.gaussian_scale)),
            trainable=c.learn_scale and c.likelihood == "gaussian",
            name="log_scale",
        )
        self.built = True

    # -- the probabilistic model ---------------------------------------------
    def _with_labels(self, inputs, labels):
        inputs = tf.convert_to_tensor(inputs, tf.float32)
        if not self.conditional:
            return inputs
        return [inputs, self.one_hot(self.require_labels(labels))]

    def posterior(self, images, labels=None):
        """q(z|x) (q(z|x, y) for the CVAE) as a tfd.MultivariateNormalDiag."""
        return distributions.diagonal_posterior(self.encoder(self._with_labels(images, labels)))

    def prior(self):
        return distributions.standard_normal_prior(self.latent_dim)

    def _decoder_outputs(self, z, labels=None):
        if self.conditional:
            z = tf.concat([z, self.one_hot(self.require_labels(labels))], axis=-1)
        return self.decoder(z)

    def likelihood(self, z, labels=None):
        """p(x|z) over whole images."""
        return distributions.likelihood(
            self.config.likelihood, self._decoder_outputs(z, labels), self.log_scale
        )

    def elbo_terms(self, images, labels=None, seed=None):
        """Per-example (-log p(x|z), KL(q(z|x) || p(z))) with z ~ q(z|x) reparameterised."""
        q = self.posterior(images, labels)
        z = q.sample(seed=seed)
        reconstruction = -self.likelihood(z, labels).log_prob(images)
        kl = distributions.kl_to_prior(q, self.prior())
        return reconstruction, kl

    def iwae_bound(self, images, labels=None, k=64, seed=None):
        """log p(x) estimated by importance sampling with K draws from q(z|x)
        (distributions.importance_weighted_bound), per example in nats; K = 1 is the ELBO."""
        images = tf.convert_to_tensor(images, tf.float32)
        q = self.posterior(images, labels)
        batch = tf.shape(images)[0]

        def log_joint(z):  # z [K, B, J] -> log p(x|z) + log p(z) [K, B]
            flat = tf.reshape(z, [-1, self.latent_dim])
            tiled = tf.tile(images, [k, 1, 1, 1])
            tiled_labels = tf.tile(labels, [k]) if self.conditional else None
            log_px = tf.reshape(self.likelihood(flat, tiled_labels).log_prob(tiled), [k, batch])
            return log_px + self.prior().log_prob(z)

        return distributions.importance_weighted_bound(q, log_joint, k, seed=seed)

    # -- what the model can do -----------------------------------------------
    def encode(self, images, labels=None):
        return self.posterior(images, labels).mean()

    def decode(self, z, labels=None):
        return distributions.likelihood_mean(self._decoder_outputs(z, labels))

    def generate(self, n_or_z, labels=None, seed=None):
        """Images from z ~ p(z) = N(0, I): `n` new draws, or the given z."""
        z = self.noise(n_or_z, seed)
        if self.conditional:
            labels = self.as_labels(self.require_labels(labels), tf.shape(z)[0])
        return self.decode(z, labels)

    def reconstruct(self, images, labels=None):
        return self.decode(self.encode(images, labels), labels)

    def call(self, inputs, training=False):
        images, labels = base.unpack(inputs)
        return self.reconstruct(images, labels)

    # -- training --------------------------------------------------------------
    def _step_seed(self):
        seed = base.step_seed(self.seed, self.optimizer.iterations, stream=0)
        return base.replica_seed(seed)

    def train_step(self, data):
        images, labels = base.unpack(data)
        with tf.GradientTape() as tape:
            reconstruction, kl = self.elbo_terms(images, labels, seed=self._step_seed())
            loss = base.global_mean(reconstruction + kl)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.track(loss=reconstruction + kl, reconstruction=reconstruction, kl=kl)

    def test_step(self, data):
        images, labels = base.unpack(data)
        reconstruction, kl = self.elbo_terms(images, labels, seed=self._step_seed())
        return self.track(loss=reconstruction + kl, reconstruction=reconstruction, kl=kl)

    # -- serving ---------------------------------------------------------------
    def _serve_encode(self):
        def encode(images, labels=None):
            q = self.posterior(images, labels)
            return {"z": q.mean(), "z_stddev": q.stddev()}

        return (encode, ("images", "labels")) if self.conditional else (encode, ("images",))


@keras.saving.register_keras_serializable(package="genzoo")
class CVAE(VAE):
    """The conditional VAE: q(z|x, y), p(x|z, y) with y one-hot, p(z) = N(0, I);
    loss = -log p(x|z, y) + KL(q(z|x, y) || p(z)). generate(n, labels=y) draws digit y."""

    conditional = True
