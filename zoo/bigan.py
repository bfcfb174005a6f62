"""BiGAN (Donahue et al. 2016, "Adversarial Feature Learning"; also ALI, Dumoulin et al.).

A generator G: z -> x, an encoder E: x -> z and a discriminator D(x, z) on joint
pairs. D tells data pairs (x, E(x)) from generated pairs (G(z), z):

    min_{G, E} max_D  V = E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))],

whose optimum has E = G^-1. E and G are never composed during training (only
`reconstruct` does G(E(x))). Per train step: one D update (d_optimizer) on

    d_loss = -log D(x, E(x)) - log(1 - D(G(z), z))       (losses.minimax_discriminator_loss)

and one joint update of G and E (ge_optimizer) on the game with the labels
flipped; update="simultaneous" (the default) takes both gradients from one
forward pass, at the players of before the step, "alternating" makes the
(G, E) update on fresh noise against the updated D. loss="non_saturating" (default):

    ge_loss = -log D(G(z), z) - log(1 - D(x, E(x)))
            = non_saturating_generator_loss(fake_logits) + non_saturating_generator_loss(-real_logits),

loss="minimax": ge_loss = -V = log(1 - D(G(z), z)) + log D(x, E(x)). (For a
sigmoid D, negating a logit swaps D and 1 - D, i.e. flips the label.)

z ~ N(0, I). G ends in tanh, so G, E and D work on images in [-1, 1]; the model's
inputs and outputs are [0, 1] images, converted at its edge.
"""

import dataclasses

import keras
import tensorflow as tf

from zoo import augment, base, ema, losses, nets, samplers
from zoo.base import option

BIGAN_LOSSES = ("non_saturating", "minimax")  # the sigmoid losses, whose label flip is -logit

_D_NOISE, _GE_NOISE = 1, 2  # random streams of one train step
_AUG_REAL, _AUG_FAKE = 3, 4  # DiffAugment's draws, folded into a step's seed
_EVAL = 10


@samplers.with_sampler_options
@dataclasses.dataclass
class BiGANConfig:
    latent_dim: int = option(50, "size of the code z")
    net: str = option("conv", "generator/encoder/discriminator architecture", nets.KINDS)
    d_dropout: float = option(0.3, "dropout rate in the discriminator")
    loss: str = option("non_saturating", "G and E's side of the game", BIGAN_LOSSES)
    augment: str = option("", augment.HELP)
    # One forward pass for both updates: 10-20% less CPU per step than
    # alternating and the same FCD per epoch (20 epochs: 16.4 against 16.5;
    # README, "what was tried"), so 22 epochs fit the time of 20.
    update: str = option("simultaneous", base.UPDATE_HELP, base.UPDATES)
    # Half-width G and D with averages of G and E: FCD 44 at 20 epochs against
    # 59 for the full widths without them at 8 epochs, in the same 5 minutes (README).
    ema_decay: float = option(0.999, ema.HELP)
    width: float = option(0.5, "multiplier of every hidden layer's units or filters in G and D")


@keras.saving.register_keras_serializable(package="genzoo")
class BiGAN(ema.Averaging, base.MultiOptimizer, samplers.CodeSampler, base.ZooModel):
    """BiGAN; see the module docstring for the objective.

    compile(d_optimizer, ge_optimizer): Adam(2e-4, beta_1=0.5) by default.
    encode(x) -> E(x); generate(n or z) -> G(z) (z from the sampler, N(0, I) by
    default); decode(z) -> G(z); reconstruct(x) -> G(E(x));
    discriminate(x, z) -> D's probability that (x, z) is a data pair.

    augment (off by default) applies a DiffAugment policy (zoo.augment, Zhao et
    al. 2020) to the image of each pair D sees in the train steps, x of (x, E(x))
    and G(z) of (G(z), z), independent draws; E encodes the un-augmented x."""

    Config = BiGANConfig
    tracked = ("d_loss", "ge_loss", "d_real", "d_fake")
    signature_names = ("generate", "encode", "reconstruct", "discriminate")
    optimizer_names = ("d_optimizer", "ge_optimizer")
    # Minibatches of 16, 18 epochs on mnist5k: FCD 17.2, probe 0.938 in 4.1
    # minutes, against 27.8 and 0.942 with 32 (18 epochs) and 43.7 and 0.848
    # with 64 (22 epochs) (README, "what was tried"); with the simultaneous
    # update 22 epochs fit 5 minutes.
    xla_pays_on_cpu_nets = base.ADVERSARIAL_NETS_XLA_SPEEDS_UP
    # 32 epochs: the 5 minutes that 22 took before XLA compiled its step (README, "what was tried")
    training_defaults = {"epochs": 32, "batch_size": 16, "learning_rate": 2e-4}
    # bigan runs saved before these options existed had full widths, no average
    # and the alternating update
    legacy_options = {"width": 1.0, "ema_decay": 0.0, "update": "alternating"}
    ema_networks = ("generator", "encoder")  # encode/decode/reconstruct average them when ema_decay > 0

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        self.augment_policy = augment.parse(c.augment)
        if not c.width > 0.0:
            raise ValueError(f"width must be > 0, got {c.width!r}")
        self.generator = nets.generator(c.net, self.latent_dim, self.image_shape, width=c.width)
        self.encoder = nets.encoder(c.net, self.image_shape, self.latent_dim)
        self.discriminator = nets.discriminator(
            c.net, self.image_shape, cond_dim=self.latent_dim, dropout=c.d_dropout, width=c.width
        )
        self.build_ema()
        self.built = True

    # -- what the model can do ----------------------------------------------------
    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return tf.cast(self.averaged_call("encoder", base.to_tanh(images)), tf.float32)

    def prior_codes(self, eps, labels=None):
        """z ~ p(z) = N(0, I) is eps itself."""
        return eps

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """Images G(z) in [0, 1]."""
        return base.from_tanh(self.averaged_call("generator", tf.cast(z, tf.float32)))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """G(E(x)) in [0, 1]: the image BiGAN's inverse mapping leads back to."""
        codes = self.averaged_call("encoder", base.to_tanh(images))
        return base.from_tanh(self.averaged_call("generator", codes))

    def discriminate(self, images: base.TensorLike, z: base.TensorLike) -> tf.Tensor:
        """D's probability [B] that (images, z) is a data pair (x, E(x))."""
        logits = self.discriminator([base.to_tanh(images), tf.cast(z, tf.float32)])
        return tf.reshape(tf.sigmoid(logits), [-1])

    # -- losses -------------------------------------------------------------------
    def logits(self, images, seed, training=False, augmented=False):
        """(real logits D(x, E(x)), fake logits D(G(z), z)) per example, with this
        replica's slice of the step's global noise batch z. augmented (the train
        steps): D reads T(x) and T(G(z)), the `augment` policy with independent
        draws from streams of `seed` (DiffAugment); E still encodes the x itself,
        and G's gradient passes through T."""
        x = base.to_tanh(images)
        z = base.replica_normal(tf.shape(x)[0], self.latent_dim, seed)
        real_x = self._augment(x, seed, _AUG_REAL) if augmented else x
        real = self.discriminator([real_x, self.encoder(x, training=training)], training=training)
        fake_x = self.generator(z, training=training)
        fake_x = self._augment(fake_x, seed, _AUG_FAKE) if augmented else fake_x
        fake = self.discriminator([fake_x, z], training=training)
        return real, fake

    def _augment(self, x, seed, stream):
        """DiffAugment T(x) (zoo.augment) from `stream` of seed; x itself when augment is off."""
        return augment.apply_stream(x, self.augment_policy, seed, stream)

    @staticmethod
    def d_loss(real, fake):
        """Per-example -log D(x, E(x)) - log(1 - D(G(z), z))."""
        return losses.minimax_discriminator_loss(real, fake)

    def ge_loss(self, real, fake):
        """Per-example loss of G and E: the generator loss on both kinds of pairs
        with the labels flipped (see the module docstring)."""
        g_loss = losses.get(self.config.loss)[1]
        return g_loss(fake) + g_loss(-tf.cast(real, tf.float32))

    # -- the two updates of a train step ------------------------------------------
    def discriminator_step(self, images):
        """One d_optimizer update of D; returns (d_loss, D(x, E(x)), D(G(z), z)) per example."""
        seed = base.step_seed(self.seed, self.d_optimizer.iterations, _D_NOISE)

        def loss_and_logits():
            real, fake = self.logits(images, seed, training=True, augmented=True)
            return self.d_loss(real, fake), real, fake

        loss, real, fake = base.minimize(self.d_optimizer, self.optimizer_variables()["d_optimizer"], loss_and_logits)
        return loss, tf.sigmoid(tf.reshape(real, [-1])), tf.sigmoid(tf.reshape(fake, [-1]))

    def ge_step(self, images):
        """One ge_optimizer update of G and E together; returns ge_loss per example."""
        seed = base.step_seed(self.seed, self.ge_optimizer.iterations, _GE_NOISE)
        return base.minimize(self.ge_optimizer, self.optimizer_variables()["ge_optimizer"],
                             lambda: self.ge_loss(*self.logits(images, seed, training=True, augmented=True)))

    def simultaneous_step(self, images):
        """One D update and one joint (G, E) update from one forward pass:

            D descends mean_i d_loss(D(x_i, E(x_i)), D(G(z_i), z_i)),
            (G, E) descend mean_i ge_loss(D(x_i, E(x_i)), D(G(z_i), z_i)),

        both gradients taken at the current (D, G, E), on one z (seeded by
        d_optimizer.iterations). Returns (d_loss, ge_loss, D(x, E(x)), D(G(z), z))
        per example, before the update."""
        seed = base.step_seed(self.seed, self.d_optimizer.iterations, _D_NOISE)

        def losses_and_logits():
            real, fake = self.logits(images, seed, training=True, augmented=True)
            return self.d_loss(real, fake), self.ge_loss(real, fake), real, fake

        variables = self.optimizer_variables()
        d_loss, ge_loss, real, fake = base.minimize_simultaneously(
            [(self.d_optimizer, variables["d_optimizer"]), (self.ge_optimizer, variables["ge_optimizer"])],
            losses_and_logits,
        )
        return d_loss, ge_loss, tf.sigmoid(tf.reshape(real, [-1])), tf.sigmoid(tf.reshape(fake, [-1]))

    def train_step(self, data):
        """update=alternating: a D update, then a (G, E) update on fresh noise
        against the updated D; simultaneous: both from one forward pass."""
        images, _ = base.unpack(data)
        if self.config.update == "simultaneous":
            d_loss, ge_loss, d_real, d_fake = self.simultaneous_step(images)
        else:
            d_loss, d_real, d_fake = self.discriminator_step(images)
            ge_loss = self.ge_step(images)
        self.update_ema()
        return self.track(d_loss=d_loss, ge_loss=ge_loss, d_real=d_real, d_fake=d_fake)

    def test_step(self, data):
        images, _ = base.unpack(data)
        seed = base.step_seed(self.seed, self.d_optimizer.iterations, _EVAL + _D_NOISE)
        real, fake = self.logits(images, seed)
        return self.track(
            d_loss=self.d_loss(real, fake),
            ge_loss=self.ge_loss(real, fake),
            d_real=tf.sigmoid(tf.reshape(real, [-1])),
            d_fake=tf.sigmoid(tf.reshape(fake, [-1])),
        )

    # -- optimizers -------------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        return {
            "d_optimizer": self.discriminator.trainable_variables,
            "ge_optimizer": self.generator.trainable_variables + self.encoder.trainable_variables,
        }

    def compile_defaults(self, learning_rate=None):
        """Adam(lr, beta_1=0.5) for D and for (G, E), lr = learning_rate or 2e-4
        (Donahue et al.)."""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        return {
            "d_optimizer": keras.optimizers.Adam(lr, beta_1=0.5),
            "ge_optimizer": keras.optimizers.Adam(lr, beta_1=0.5),
        }

    # -- serving ----------------------------------------------------------------------
    def _serve_discriminate(self):
        return (lambda images, z: {"probability": self.discriminate(images, z)}), ("images", "z")
