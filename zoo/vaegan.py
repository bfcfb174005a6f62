"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned
similarity metric").

A VAE whose decoder is also a GAN's generator, and whose reconstruction is
measured in the feature space of the GAN's discriminator instead of in
pixels. Encoder Enc: x -> q(z|x) = N(mu, diag sigma^2) (tfp), decoder Dec:
z -> x~ in [-1, 1] (tanh), discriminator Dis: x -> logit, and Dis_l(x) the
features of Dis's last hidden layer (those its logit layer reads):

    L_prior = KL(q(z|x) || N(0, I))                                 (analytic, tfp)
    L_llike = -log N(Dis_l(x) | Dis_l(x~), I)
            = 1/2 ||Dis_l(x) - Dis_l(x~)||^2 + d/2 log 2 pi,         x~ = Dec(z), z ~ q(z|x)
    L_GAN   = log Dis(x) + log(1 - Dis(x~)) + log(1 - Dis(x_p)),     x_p = Dec(z_p), z_p ~ N(0, I)

(losses.feature_reconstruction_loss is L_llike). Each network has its own
optimizer and its own loss, all three gradients taken from one forward pass
at the weights of before the step (the paper's Algorithm 1):

    Enc (enc_optimizer):  L_prior + L_llike
    Dec (dec_optimizer):  gamma L_llike + 1/2 [g_loss(Dis(x~)) + g_loss(Dis(x_p))]
    Dis (d_optimizer):    1/2 [d_loss(Dis(x), Dis(x~)) + d_loss(Dis(x), Dis(x_p))]

with (d_loss, g_loss) the pair `losses.get(config.loss)`: for the default
non_saturating, Dis descends -L_GAN with its real term weighted as both fake
terms together (the authors' code weighs real and generated images 1/2 each),
and Dec descends -log Dis(.) on both kinds of fakes instead of ascending
log(1 - Dis(.)). The encoder never sees the GAN term; Dis never sees L_llike.

Equilibrium gating (equilibrium_margin m > 0; the authors' code, m = 0.35 to
0.4): with r = mean -log Dis(x) and f = mean -log(1 - Dis(x_fake)) over the
global batch and both kinds of fakes, the step skips Dis's update when
r < 0.68 - m or f < 0.68 - m (Dis is winning), skips Dec's when r > 0.68 + m
or f > 0.68 + m (Dis is losing), and makes both when it would skip both. A
skipped update leaves the network and its optimizer's state as they were.

Under tf.distribute every loss is averaged over the global batch and the
step's noise (the posterior's eps, the prior's z_p) is each replica's slice of
one global draw, so N replicas make one device's update; the gates are read
from all-reduced means, so every replica skips alike.
"""

import dataclasses

import keras
import tensorflow as tf

from zoo import base, distributions, ema, gan, losses, nets, samplers
from zoo.base import option

VAEGAN_LOSSES = ("non_saturating", "minimax", "least_squares", "hinge")  # the pairs without a penalty term
SIGMOID_LOSSES = ("non_saturating", "minimax")  # whose logits are log-odds, as the equilibrium gating reads them
EQUILIBRIUM = 0.68  # the authors' code: about log 2, the cross-entropy of a D that cannot tell

_POSTERIOR, _PRIOR = 1, 2  # random streams of one train step
_EVAL = 10


# Minibatches of 16, 24 epochs on mnist5k (README, "what was tried"), FCD /
# floor and probe (pixels 0.916) with the 40-component sampler: gamma 0.01
# 3.5x, 0.938; 0.1 1.66x, 0.930; 1 1.65x, 0.924. From the prior instead:
# 3.4x, 4.3x, 7.4x: the more the decoder reconstructs, the further its
# codes are from N(0, I).
@samplers.with_sampler_options(sampler="gmm", components=40)
@dataclasses.dataclass
class VAEGANConfig:
    latent_dim: int = option(32, "size of the latent code z")
    net: str = option("conv", "encoder/decoder/discriminator architecture", nets.KINDS)
    gamma: float = option(
        0.1, "weight of the feature-space reconstruction L_llike in the decoder's loss, against the GAN term's 1 "
        "(the paper's gamma; the authors' code weighs them 0.01 : 0.99)"
    )
    loss: str = option("non_saturating", "adversarial loss pair of Dis and Dec", VAEGAN_LOSSES)
    equilibrium_margin: float = option(
        0.0, "equilibrium gating (the authors' code, 0.35-0.4): skip Dis's update when its mean cross-entropy "
        "on real or fake images is below 0.68 - margin, Dec's when above 0.68 + margin; 0: off"
    )
    d_dropout: float = option(0.0, "dropout rate in the discriminator (it also makes the features of L_llike)")
    # Off: the default run of 8fe722c scored with its raw weights (train.evaluate
    # --weights=raw) gave probe 0.938 and FCD 1.62x, with the averages 0.930 and
    # 1.60x: the average of the encoder loses what the probe reads (README).
    ema_decay: float = option(0.0, ema.HELP)
    width: float = option(0.5, "multiplier of every hidden layer's units or filters in Dec and Dis")


@keras.saving.register_keras_serializable(package="genzoo")
class VAEGAN(ema.Averaging, base.MultiOptimizer, samplers.CodeSampler, base.ZooModel):
    """VAE-GAN; see the module docstring for the objective.

    compile(enc_optimizer, dec_optimizer, d_optimizer): Adam(2e-4, beta_1=0.5)
    each by default. encode(x) -> the posterior mean; decode(z) -> Dec(z) in
    [0, 1]; generate(n or z) decodes z from the sampler (the prior N(0, I) by
    default); reconstruct(x) -> Dec(E[q(z|x)]); discriminate(x) -> Dis's
    probability that x is a data image."""

    Config = VAEGANConfig
    tracked = ("kl", "feature_nll", "d_loss", "dec_loss", "d_real", "d_fake", "d_updated", "dec_updated")
    signature_names = ("generate", "encode", "decode", "reconstruct", "discriminate")
    optimizer_names = ("enc_optimizer", "dec_optimizer", "d_optimizer")
    optimizer_alias = "enc_optimizer"
    # XLA halves its steps' speed on CPUs (train.benchmark --model=vaegan --xla_vs_plain: 0.49)
    xla_pays_on_cpu_nets = ()
    # Minibatches of 16: FCD 14.7 at 24 epochs (4 minutes) against 18.9 at 40
    # epochs of 64 (5 minutes), both from the prior (README, "what was tried").
    training_defaults = {"epochs": 24, "batch_size": 16, "learning_rate": 2e-4}
    ema_networks = ("encoder", "decoder")

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if not c.width > 0.0:
            raise ValueError(f"width must be > 0, got {c.width!r}")
        if c.gamma < 0.0 or c.equilibrium_margin < 0.0:
            raise ValueError(f"gamma and equilibrium_margin must be >= 0, got {c.gamma!r} and {c.equilibrium_margin!r}")
        if c.equilibrium_margin and c.loss not in SIGMOID_LOSSES:
            # its thresholds are cross-entropies of D's probabilities, which the other losses' logits are not
            raise ValueError(f"equilibrium_margin needs a loss whose D is a sigmoid probability "
                             f"({', '.join(SIGMOID_LOSSES)}), got loss={c.loss!r}")
        self.d_loss_fn, self.g_loss_fn = losses.get(c.loss)
        self.encoder = nets.encoder(c.net, self.image_shape, distributions.posterior_size("diagonal", self.latent_dim))
        self.decoder = nets.generator(c.net, self.latent_dim, self.image_shape, name="decoder", width=c.width)
        # No batch norm in Dis: each image's features must be its own for L_llike.
        self.discriminator = nets.discriminator(
            c.net, self.image_shape, dropout=c.d_dropout, width=c.width, batch_norm=False, feature_output=True
        )
        self.build_ema()
        self.built = True

    # -- the probabilistic model ------------------------------------------------
    def posterior(self, images, averaged=False):
        """q(z|x) = N(mu(x), diag sigma(x)^2), a tfd.MultivariateNormalDiag;
        averaged: from the encoder's moving average (zoo.ema)."""
        x = base.to_tanh(images)
        params = self.averaged_call("encoder", x) if averaged else self.encoder(x)
        return distributions.posterior("diagonal", tf.cast(params, tf.float32))

    def prior_codes(self, eps, labels=None):
        """z ~ p(z) = N(0, I) is eps itself."""
        return eps

    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.posterior(images, averaged=True).mean()

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """Dec(z) in [0, 1]."""
        return base.from_tanh(self.averaged_call("decoder", tf.cast(z, tf.float32)))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode(self.encode(images))

    def discriminate(self, images: base.TensorLike) -> tf.Tensor:
        """Dis's probability [B] that `images` are data images."""
        logits, _ = self.discriminator(base.to_tanh(images))
        return tf.reshape(tf.sigmoid(tf.cast(logits, tf.float32)), [-1])

    # -- losses -----------------------------------------------------------------
    def losses_of(self, images, seed, training=False):
        """One forward pass: {kl, feature_nll, d_loss, dec_loss, enc_loss} per
        example (see the module docstring), and the logits of Dis on the real,
        reconstructed and prior-sampled images. z's eps and z_p are this
        replica's slices of global draws from `seed`."""
        x = base.to_tanh(images)
        n = tf.shape(x)[0]
        params = tf.cast(self.encoder(x, training=training), tf.float32)
        q = distributions.posterior("diagonal", params)
        eps = base.replica_normal(n, self.latent_dim, tf.random.experimental.stateless_fold_in(seed, _POSTERIOR))
        z = q.bijector.forward(eps)  # mu + sigma eps: reparameterised
        z_prior = base.replica_normal(n, self.latent_dim, tf.random.experimental.stateless_fold_in(seed, _PRIOR))
        # One call of Dec on both codes and one of Dis on all three batches: Dis
        # has no batch norm, so each row's output is its own; Dec's batch norm
        # (conv nets) normalises reconstructions and prior samples together.
        fakes = self.decoder(tf.concat([z, z_prior], 0), training=training)
        logits, features = self.discriminator(tf.concat([x, tf.cast(fakes, x.dtype)], 0), training=training)
        logits = tf.reshape(tf.cast(logits, tf.float32), [3, n])
        features = tf.reshape(tf.cast(features, tf.float32), [3, n, -1])
        real, reconstructed, sampled = logits[0], logits[1], logits[2]
        kl = distributions.kl_to_prior(q, distributions.standard_normal_prior(self.latent_dim))
        feature_nll = losses.feature_reconstruction_loss(features[0], features[1])
        gan_g = 0.5 * (self.g_loss_fn(reconstructed) + self.g_loss_fn(sampled))
        terms = {
            "enc_loss": kl + feature_nll,
            "dec_loss": self.config.gamma * feature_nll + gan_g,
            "d_loss": 0.5 * (self.d_loss_fn(real, reconstructed) + self.d_loss_fn(real, sampled)),
            "kl": kl,
            "feature_nll": feature_nll,
        }
        return terms, (real, reconstructed, sampled)

    # -- the train step -----------------------------------------------------------
    def _seed(self, stream=0):
        # enc_optimizer steps every train step (Dis's and Dec's may be gated off)
        return base.step_seed(self.seed, self.enc_optimizer.iterations, stream)

    def gates(self, logits):
        """(update Dis, update Dec) of the equilibrium gating from the step's
        logits (real, reconstructed, sampled): both True when it is off."""
        margin = self.config.equilibrium_margin
        if not margin:
            return tf.constant(True), tf.constant(True)
        real, reconstructed, sampled = logits
        r = base.all_reduced_mean(tf.nn.softplus(-real))  # -log Dis(x)
        f = base.all_reduced_mean(0.5 * (tf.nn.softplus(reconstructed) + tf.nn.softplus(sampled)))  # -log(1 - Dis)
        update_d = tf.logical_not(tf.logical_or(r < EQUILIBRIUM - margin, f < EQUILIBRIUM - margin))
        update_dec = tf.logical_not(tf.logical_or(r > EQUILIBRIUM + margin, f > EQUILIBRIUM + margin))
        neither = tf.logical_not(tf.logical_or(update_d, update_dec))
        return tf.logical_or(update_d, neither), tf.logical_or(update_dec, neither)

    def train_step(self, data):
        images, _ = base.unpack(data)
        seed = self._seed()
        variables = self.optimizer_variables()

        def step_losses():
            terms, logits = self.losses_of(images, seed, training=True)
            return terms["enc_loss"], terms["dec_loss"], terms["d_loss"], terms, logits

        def gates(out):
            update_d, update_dec = self.gates(out[-1])
            return [None, update_dec, update_d]

        *_, terms, (real, reconstructed, sampled), applied = base.minimize_simultaneously(
            [(self.enc_optimizer, variables["enc_optimizer"]), (self.dec_optimizer, variables["dec_optimizer"]),
             (self.d_optimizer, variables["d_optimizer"])],
            step_losses,
            gates=gates,
        )
        self.update_ema()
        _, dec_updated, d_updated = applied
        return self._track(terms, real, tf.concat([reconstructed, sampled], 0), d_updated, dec_updated)

    def _track(self, terms, real, fake, d_updated, dec_updated):
        return self.track(
            kl=terms["kl"], feature_nll=terms["feature_nll"], d_loss=terms["d_loss"], dec_loss=terms["dec_loss"],
            d_real=tf.sigmoid(real), d_fake=tf.sigmoid(fake),
            d_updated=tf.cast(d_updated, tf.float32), dec_updated=tf.cast(dec_updated, tf.float32),
        )

    def test_step(self, data):
        images, _ = base.unpack(data)
        terms, (real, reconstructed, sampled) = self.losses_of(images, self._seed(_EVAL))
        fake = tf.concat([reconstructed, sampled], 0)
        return self._track(terms, real, fake, *self.gates((real, reconstructed, sampled)))

    def train_steps_taken(self):
        return self.enc_optimizer.iterations

    # -- optimizers ---------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        return {
            "enc_optimizer": self.encoder.trainable_variables,
            "dec_optimizer": self.decoder.trainable_variables,
            "d_optimizer": self.discriminator.trainable_variables,
        }

    def compile_defaults(self, learning_rate=None):
        """gan.default_optimizer, Adam(lr, beta_1=0.5), for each network, lr =
        learning_rate or 2e-4 (Radford et al.)."""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        return {name: gan.default_optimizer(self.config.loss, lr) for name in self.optimizer_names}

    # -- serving ------------------------------------------------------------------
    def _serve_discriminate(self):
        return (lambda images: {"probability": self.discriminate(images)}), ("images",)
