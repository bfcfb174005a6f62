"""The adversarial autoencoder (Makhzani et al. 2015, "Adversarial Autoencoders").

A deterministic autoencoder x -> z = Q(x) -> P(z) whose codes are pushed towards
a prior p(z) by a latent discriminator D instead of a KL term: D tells prior
samples z ~ p(z) ("real") from codes Q(x) ("fake"), and Q, as the generator of
that game, learns to fool it. Every train step makes three updates, in the
paper's order (a reconstruction phase, then a regularisation phase):

1. reconstruction, Q and P (ae_optimizer):
       sum_pixels -[x log x' + (1 - x) log(1 - x')],  x' = sigmoid(P(Q(x)))
2. discriminator, D (d_optimizer):   d_loss(D(z_prior), D(Q(x)))
3. generator, Q (g_optimizer):       g_loss(D(Q(x)))

with (d_loss, g_loss) the pair `losses.get(config.loss)` (non-saturating by
default: -log D(z_prior) - log(1 - D(Q(x))) and -log D(Q(x))).

Priors:
- normal: p(z) = N(0, I).
- gmm: p(z) = 1/K sum_k N(mu_k, gmm_std^2 I), K = num_classes (10 when the
  model has no classes), mu_k = gmm_radius (cos 2 pi k / K, sin 2 pi k / K,
  0, ..., 0): K well-separated Gaussians on a ring in the first two latent
  dimensions, like the paper's 2-D mixture of 10 Gaussians (needs latent_dim >= 2).
  With use_labels (Makhzani et al., section 2.3, the supervised variant) D also
  sees a one-hot of the label with an extra "unlabelled" slot: the prior sample
  of an example labelled y is drawn from component y and shown with y, the code
  Q(x) is shown with y too, so D forces class y into component y. Examples
  without a label (a dataset without labels, or label -1) are shown with the
  unlabelled slot and prior samples from the whole mixture.

Tracked: reconstruction (nats per image), d_loss, g_loss, and d_prior / d_code,
the mean sigmoid of D on prior samples and on codes (D's probabilities for the
sigmoid losses; only a trend for least_squares and wasserstein_gp).

Under tf.distribute every loss is averaged over the global batch
(base.global_mean), and a step's prior noise and component draws are each
replica's slice of one global draw seeded by (seed, d_optimizer.iterations,
stream), so N replicas make exactly the update one device makes on the global
batch. (Only wasserstein_gp's interpolation weights are drawn per replica,
base.replica_seed: the same distribution, not the same numbers.)

Learning rates: the latent game runs at GAME_LR_RATIO (1/5) of the
reconstruction's rate (compile_defaults).
"""

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import base, distributions, ema, losses, nets, samplers
from zoo.base import option

PRIORS = ("normal", "gmm")

# Random streams of one train step (base.step_seed).
_PRIOR_NOISE, _PRIOR_COMPONENT, _PENALTY = 1, 2, 3
_EVAL = 10  # offset of the streams that test_step uses

GAME_LR_RATIO = 0.2  # learning rate of the latent game / that of the reconstruction


# 40 Gaussians against 10, refitted to the codes of the default runs at
# bfe053c (three EM seeds each): FCD / floor ae 1.98 against 2.75, vae 1.85
# against 3.20, aae 2.20 against 2.67; a sample's distance to its nearest
# train image stays about a test image's (median 0.86-0.95 of it, 0.87-1.0
# with 10): no replay of training images (README, "what was tried").
@samplers.with_sampler_options(sampler="gmm", components=40)
@dataclasses.dataclass
class AAEConfig:
    # 16 against 8, 22 epochs on mnist5k: FCD 12.7 against 17.7, probe 0.938
    # against 0.898; 32 against 16 with the 40-component sampler (e3c880d):
    # probe 0.946 against 0.928, FCD 2.2x against 2.3x (README, "what was tried").
    latent_dim: int = option(32, "size of the code z")
    net: str = option("conv", "encoder/decoder architecture", nets.KINDS)
    prior: str = option("normal", "prior p(z) the codes are matched to", PRIORS)
    loss: str = option("non_saturating", "adversarial loss of the latent game", tuple(losses.LOSSES))
    gmm_radius: float = option(4.0, "gmm prior: radius of the ring of component means")
    gmm_std: float = option(0.5, "gmm prior: standard deviation of every component")
    use_labels: bool = option(
        False, "gmm prior: draw labelled examples' prior samples from their class's component, "
        "and show D the label (the supervised AAE)"
    )
    # 22 epochs on mnist5k: FCD 17.7 from the average against 19.0 from the raw
    # weights of the same run, and a steadier FCD from epoch to epoch (README).
    ema_decay: float = option(0.995, ema.HELP)


def replica_randint(batch_size, maxval, seed):
    """Uniform ints in [0, maxval) [batch_size] for this replica, cut from one
    global draw exactly as base.replica_normal cuts its noise (N replicas
    together use the draws one device would use for the global batch)."""
    return base.replica_slice(
        lambda n: tf.random.stateless_uniform([n], seed, minval=0, maxval=maxval, dtype=tf.int32), batch_size
    )


def default_optimizers(lr):
    """{ae_optimizer: Adam(lr), d_optimizer and g_optimizer: Adam(lr *
    GAME_LR_RATIO, beta_1=0.5)}: the reconstruction and the latent game of an
    adversarial autoencoder (AAE, semi-supervised AAE)."""
    return {
        "ae_optimizer": keras.optimizers.Adam(lr),
        "d_optimizer": keras.optimizers.Adam(lr * GAME_LR_RATIO, beta_1=0.5),
        "g_optimizer": keras.optimizers.Adam(lr * GAME_LR_RATIO, beta_1=0.5),
    }


@keras.saving.register_keras_serializable(package="genzoo")
class AAE(ema.Averaging, base.MultiOptimizer, samplers.CodeSampler, base.ZooModel):
    """Adversarial autoencoder; see the module docstring for the objective.

    compile(ae_optimizer, d_optimizer, g_optimizer): Adam by default (see
    compile_defaults). generate(n or z, labels=None) decodes prior samples;
    discriminate(z) is D's probability that z is a prior sample."""

    Config = AAEConfig
    tracked = ("reconstruction", "d_loss", "g_loss", "d_prior", "d_code")
    signature_names = ("generate", "encode", "decode", "reconstruct", "discriminate")
    optimizer_names = ("ae_optimizer", "d_optimizer", "g_optimizer")
    optimizer_alias = "ae_optimizer"  # compile(optimizer=...) sets it, as for an autoencoder
    xla_pays_on_cpu_nets = base.AUTOENCODER_NETS_XLA_SPEEDS_UP
    training_defaults = {"epochs": 22, "batch_size": 64, "learning_rate": 1e-3}
    # aae runs saved before the average was on by default had none
    legacy_options = {"ema_decay": 0.0, "sampler_components": 10}
    ema_networks = ("encoder", "decoder")  # encode/decode (so generate, reconstruct) average them when ema_decay > 0

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if c.prior == "gmm" and self.latent_dim < 2:
            raise ValueError("prior='gmm' places its components in 2 latent dimensions: latent_dim must be >= 2")
        if c.use_labels and c.prior != "gmm":
            raise ValueError("use_labels needs prior='gmm' (it picks the prior component of each label)")
        self.components = self.num_classes if self.num_classes >= 2 else 10
        self.label_slots = self.components + 1 if c.use_labels else 0  # + the "unlabelled" slot
        self.d_loss_fn, self.g_loss_fn = losses.get(c.loss)
        self.encoder = nets.encoder(c.net, self.image_shape, self.latent_dim)
        self.decoder = nets.decoder(c.net, self.latent_dim, self.image_shape)
        self.latent_discriminator = nets.critic(self.latent_dim + self.label_slots)
        # Runs saved before the rename hold this network under "critic" (in .keras
        # files and checkpoints alike): the alias keeps them loadable.
        self.critic = self.latent_discriminator
        self.build_ema()
        self.built = True

    # -- the prior -------------------------------------------------------------
    def component_means(self):
        """[K, latent_dim]: the gmm means on a ring in the first two dimensions."""
        angles = 2.0 * math.pi * tf.range(self.components, dtype=tf.float32) / self.components
        ring = self.config.gmm_radius * tf.stack([tf.cos(angles), tf.sin(angles)], axis=1)
        return tf.pad(ring, [[0, 0], [0, self.latent_dim - 2]])

    def prior_transform(self, eps, components=None):
        """Maps standard-normal eps [B, J] to a prior sample: eps itself for the
        normal prior; mu_k + gmm_std * eps for the gmm, k = components[i] (row i
        uses component i mod K when components is None)."""
        eps = tf.cast(eps, tf.float32)
        if self.config.prior == "normal":
            return eps
        if components is None:
            components = tf.range(tf.shape(eps)[0]) % self.components
        components = tf.cast(components, tf.int32)
        return tf.gather(self.component_means(), components) + self.config.gmm_std * eps

    def _known(self, labels, n):
        """(labels [n] with -1 where unknown, mask of known labels) or (None, None)."""
        if labels is None or not self.config.use_labels:
            return None, None
        labels = tf.reshape(tf.cast(labels, tf.int32), [n])
        return labels, labels >= 0

    def sample_prior(self, batch_size, labels, seed):
        """This replica's prior samples [batch_size, J] for one step: a replica's
        slice of one global draw (base.replica_normal, replica_randint), so the
        samples do not depend on the number of replicas. With use_labels,
        labelled rows come from their label's component."""
        eps = base.replica_normal(batch_size, self.latent_dim, seed)
        if self.config.prior == "normal":
            return eps
        component_seed = tf.random.experimental.stateless_fold_in(seed, _PRIOR_COMPONENT)
        components = replica_randint(batch_size, self.components, component_seed)
        labels, known = self._known(labels, batch_size)
        if labels is not None:
            components = tf.where(known, labels, components)
        return self.prior_transform(eps, components)

    def _discriminator_inputs(self, z, labels=None):
        """z, joined with the label one-hot (unlabelled slot where unknown) under use_labels."""
        z = tf.cast(z, tf.float32)
        if not self.label_slots:
            return z
        n = tf.shape(z)[0]
        if labels is None:
            slots = tf.fill([n], self.components)
        else:
            labels, known = self._known(labels, n)
            slots = tf.where(known, labels, self.components)
        return tf.concat([z, tf.one_hot(slots, self.label_slots)], axis=-1)

    # -- what the model can do -------------------------------------------------
    def _codes(self, images, training=False, averaged=False):
        """Q(x); averaged: with Q's moving average (zoo.ema), for inference."""
        x = tf.cast(images, tf.float32)
        codes = self.averaged_call("encoder", x, training=training) if averaged else self.encoder(x, training=training)
        return tf.cast(codes, tf.float32)

    def _decoder_logits(self, z, training=False, averaged=False):
        """P(z)'s logits; averaged: with P's moving average (zoo.ema), for inference."""
        z = tf.cast(z, tf.float32)
        logits = self.averaged_call("decoder", z, training=training) if averaged else self.decoder(z, training=training)
        return tf.cast(logits, tf.float32)

    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self._codes(images, averaged=True)

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return distributions.likelihood_mean(self._decoder_logits(z, averaged=True))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode(self.encode(images))

    def prior_codes(self, eps, labels=None):
        """Prior samples for generate (sampler "prior") from standard-normal eps,
        through prior_transform: z = eps for the normal prior; for the gmm,
        z = mu_k + gmm_std * eps with k = labels[i] when labels are given (an int
        labels picks one component for all), else k = i mod K (every component
        in turn, so a batch of n >= K shows them all)."""
        components = None
        if labels is not None and self.config.prior == "gmm":
            components = self.as_labels(labels, tf.shape(eps)[0])
        return self.prior_transform(eps, components)

    def discriminate(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """D's probability [B] that z is a prior sample (not a code)."""
        z = tf.cast(z, tf.float32)
        return tf.reshape(tf.sigmoid(self.latent_discriminator(self._discriminator_inputs(z, labels))), [-1])

    # -- losses ---------------------------------------------------------------
    def reconstruction_loss(self, images, training=False):
        """Per-image summed sigmoid cross-entropy of P(Q(x)) against x (nats)."""
        return distributions.bernoulli_nll(images, self._decoder_logits(self._codes(images, training), training))

    def discriminator_loss(self, images, labels, seed, training=False):
        """(per-example d_loss, D(prior), D(code)) with codes held fixed."""
        codes = tf.stop_gradient(self._codes(images, training))
        prior = self.sample_prior(tf.shape(images)[0], labels, seed)
        real = self.latent_discriminator(self._discriminator_inputs(prior, labels), training=training)
        fake = self.latent_discriminator(self._discriminator_inputs(codes, labels), training=training)
        loss = self.d_loss_fn(real, fake)
        if losses.has_gradient_penalty(self.config.loss):
            penalty_seed = base.replica_seed(tf.random.experimental.stateless_fold_in(seed, _PENALTY))
            critic = lambda v: self.latent_discriminator(self._discriminator_inputs(v, labels), training=training)
            loss += losses.gradient_penalty(critic, prior, codes, penalty_seed)
        return loss, tf.sigmoid(tf.reshape(real, [-1])), tf.sigmoid(tf.reshape(fake, [-1]))

    def generator_loss(self, images, labels, training=False):
        """Per-example g_loss(D(Q(x))): Q as the generator of the latent game."""
        codes = self._codes(images, training)
        return self.g_loss_fn(self.latent_discriminator(self._discriminator_inputs(codes, labels), training=training))

    # -- the three updates of a train step -------------------------------------
    def _seed(self, stream):
        return base.step_seed(self.seed, self.d_optimizer.iterations, stream)

    def reconstruction_step(self, images):
        """One ae_optimizer update of Q and P on the reconstruction loss."""
        variables = self.optimizer_variables()["ae_optimizer"]
        return base.minimize(self.ae_optimizer, variables, lambda: self.reconstruction_loss(images, training=True))

    def discriminator_step(self, images, labels=None):
        """One d_optimizer update of D: prior samples real, codes fake."""
        seed = self._seed(_PRIOR_NOISE)
        return base.minimize(self.d_optimizer, self.optimizer_variables()["d_optimizer"],
                             lambda: self.discriminator_loss(images, labels, seed, training=True))

    def generator_step(self, images, labels=None):
        """One g_optimizer update of Q: its codes should fool D."""
        return base.minimize(self.g_optimizer, self.optimizer_variables()["g_optimizer"],
                             lambda: self.generator_loss(images, labels, training=True))

    def train_step(self, data):
        images, labels = base.unpack(data)
        reconstruction = self.reconstruction_step(images)
        d_loss, d_prior, d_code = self.discriminator_step(images, labels)
        g_loss = self.generator_step(images, labels)
        self.update_ema()
        return self.track(
            reconstruction=reconstruction, d_loss=d_loss, g_loss=g_loss, d_prior=d_prior, d_code=d_code
        )

    def test_step(self, data):
        images, labels = base.unpack(data)
        d_loss, d_prior, d_code = self.discriminator_loss(images, labels, self._seed(_EVAL + _PRIOR_NOISE))
        return self.track(
            reconstruction=self.reconstruction_loss(images),
            d_loss=d_loss,
            g_loss=self.generator_loss(images, labels),
            d_prior=d_prior,
            d_code=d_code,
        )

    # -- optimizers -------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        return {
            "ae_optimizer": self.encoder.trainable_variables + self.decoder.trainable_variables,
            "d_optimizer": self.latent_discriminator.trainable_variables,
            "g_optimizer": self.encoder.trainable_variables,
        }

    def compile_defaults(self, learning_rate=None):
        """Adam(lr) for the reconstruction and Adam(lr * GAME_LR_RATIO, beta_1=0.5)
        for D and for Q's generator update, lr = learning_rate or 1e-3. (On
        mnist5k one rate for all three collapses the codes: Q's generator
        update outruns the reconstruction.)"""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        return default_optimizers(lr)

    # -- serving ----------------------------------------------------------------
    def _serve_discriminate(self):
        return (lambda z: {"probability": self.discriminate(z)}), ("z",)
