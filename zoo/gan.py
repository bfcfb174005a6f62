"""The GAN family: Goodfellow et al.'s minimax game (GAN, MLP nets), the DCGAN
of the TensorFlow tutorial (conv nets) and the conditional GAN (Mirza and
Osindero: the one-hot label joins z in G and the image features in D).

One train step is Algorithm 1 of Goodfellow et al. (2014):

    for k = d_steps times:   # same real batch, fresh noise z every time
        update D by descending   mean_i d_loss(D(x_i), D(G(z_i)))
    update G by descending       mean_i g_loss(D(G(z_i)))    # fresh z again

with (d_loss, g_loss) one of the pairs of `zoo.losses` (`loss` option; the
default `non_saturating` is D: -log D(x) - log(1 - D(G(z))), G: -log D(G(z))).
G is fixed while D steps and D is fixed while G steps; the G step sees the D
just updated.

`update=simultaneous` (dcgan's default, the TensorFlow tutorial's step) makes
the last D update and the G update from one forward pass: one batch of fakes
G(z), D on the real and on the fake batch, then both gradients, so G's
gradient is taken against D before its update (a simultaneous gradient step
on the game). It saves a G forward pass and a D pass per step.

Images are float32 in [0, 1] outside the model; G ends in tanh, so D reads
x * 2 - 1 and `generate` returns (G(z) + 1) / 2.

Distributed training: every loss is a sum over this replica's examples divided
by the global batch (base.global_mean) and Keras sums gradients over replicas;
the noise of a step is one stateless draw for the global batch, sliced per
replica (base.replica_normal), seeded by (model seed, optimizer iterations,
stream), and so are DiffAugment's (zoo.augment); batch norm (G's, and
the 32x32 and 64x64 D's) is synchronized; spectral norm's power-iteration
vectors are computed alike on every replica and kept from the first. So N
replicas on a global batch make the update that one device makes on it
(tests/test_gan.py proves it).
"""

import dataclasses

import keras
import tensorflow as tf

from zoo import augment, base, ema, losses, nets
from zoo.base import option

# Random streams of base.step_seed (distinct noise for each use in a step).
D_NOISE, G_NOISE, GP_MIX, EVAL_NOISE = 0, 1, 2, 3
AUG_REAL, AUG_FAKE = 4, 5  # DiffAugment's draws, folded into a step's seed (as GP_MIX)


D_HIDDEN_HELP = (
    "units (before width) of one more hidden Dense + LeakyReLU layer in the discriminator, just before "
    "its logit (after the label's join layer, if any; the projection discriminator projects on its output); "
    "0: none"
)


@dataclasses.dataclass
class GANConfig:
    latent_dim: int = option(64, "size of the generator's noise z ~ N(0, I)")
    net: str = option("mlp", "generator/discriminator architecture", nets.KINDS)
    loss: str = option("non_saturating", "adversarial loss pair (see zoo/losses.py)", tuple(losses.LOSSES))
    d_steps: int = option(
        1, "discriminator updates per generator update (k of Algorithm 1), each on its own minibatch: "
        "a train step's batch holds k of them (train.run batches k * batch_size rows)"
    )
    g_steps: int = option(
        1, "generator updates per train step, after the d_steps discriminator updates, each on fresh noise "
        "(d_steps and g_steps set the ratio both ways)"
    )
    real_target: float = option(
        0.9, "discriminator's target for real images; < 1 is one-sided label smoothing, 1 none"
    )
    d_dropout: float = option(0.3, "dropout rate in the discriminator (0 for none)")
    gp_weight: float = option(10.0, "gradient-penalty weight (loss=wasserstein_gp only)")
    update: str = option(
        "alternating",
        base.UPDATE_HELP,
        base.UPDATES,
    )
    r1_weight: float = option(
        0.0, "weight gamma of the R1 penalty gamma/2 ||grad_x D(x)||^2 on real data (Mescheder et al. 2018); 0: off"
    )
    spectral_norm: bool = option(
        False, "spectral normalisation of every discriminator layer (Miyato et al. 2018)"
    )
    d_lr_multiplier: float = option(
        1.0, "discriminator's default learning rate (compile_defaults, train.run) = this times the "
        "generator's (two time-scale rule, Heusel et al. 2017)"
    )
    augment: str = option("", augment.HELP)
    # gan's default run at 140 epochs: FCD 20.3 from the average against 24.9
    # from the same run's raw weights (README, "what was tried").
    ema_decay: float = option(0.999, ema.HELP)
    width: float = option(1.0, "multiplier of every hidden layer's units or filters in G and D")
    d_hidden: int = option(0, D_HIDDEN_HELP)


@dataclasses.dataclass
class DCGANConfig(GANConfig):
    latent_dim: int = option(100, "size of the generator's noise z ~ N(0, I)")
    net: str = option("conv", "generator/discriminator architecture", nets.KINDS)
    real_target: float = option(
        1.0, "discriminator's target for real images; < 1 is one-sided label smoothing, 1 none"
    )
    update: str = option(
        "simultaneous",
        base.UPDATE_HELP,
        base.UPDATES,
    )
    # Half the tutorial's filters train 2.2x faster here; in its 3 minutes that
    # took FCD from 62 (width 1, 8 epochs) to 44 (22 epochs), both with the
    # average, which alone took 76 to 62 (README, "Quality from real runs").
    width: float = option(
        0.5, "multiplier of every hidden layer's units or filters in G and D (1, with d_hidden 0: the tutorial's)"
    )
    ema_decay: float = option(0.999, ema.HELP)
    # The joint layer BiGAN's D(x, z) has: at 22 epochs FCD 13.0 against 26.1
    # without it, 14.1 with 1024 units at 30 (README, "what was tried"). Measured
    # on 28x28 digits; the 32x32 and 64x64 D (the paper's, which has no hidden
    # dense layer) gets it too.
    d_hidden: int = option(512, D_HIDDEN_HELP)


LEARNING_RATE = 2e-4  # Radford et al. (DCGAN)
WGAN_GP_LEARNING_RATE = 1e-4  # Gulrajani et al.


def default_learning_rate(loss):
    return WGAN_GP_LEARNING_RATE if losses.has_gradient_penalty(loss) else LEARNING_RATE


def default_optimizer(loss="non_saturating", learning_rate=None, multiplier=1.0):
    """Adam(2e-4, beta_1=0.5) of Radford et al. (DCGAN); for wasserstein_gp the
    Adam(1e-4, beta_1=0, beta_2=0.9) of Gulrajani et al. The learning rate
    (learning_rate, or that default) is scaled by `multiplier`."""
    lr = (learning_rate or default_learning_rate(loss)) * multiplier
    if losses.has_gradient_penalty(loss):
        return keras.optimizers.Adam(lr, beta_1=0.0, beta_2=0.9)
    return keras.optimizers.Adam(lr, beta_1=0.5)


@keras.saving.register_keras_serializable(package="genzoo")
class GAN(ema.Averaging, base.MultiOptimizer, base.ZooModel):
    """G: z ~ N(0, I) -> x = G(z) in [-1, 1]; D: x -> logit, D(x) = sigmoid(logit).

    D minimises  d_loss = -[t log D(x) + (1 - t) log(1 - D(x))] - log(1 - D(G(z)))
    (t = real_target; t = 1 is -V(G, D) of Goodfellow et al.; the default
    t = 0.9 of gan and cgan is the one-sided label smoothing of Salimans et al.
    2016, which gave clearer MLP digits; dcgan keeps the tutorial's t = 1), G minimises
    -log D(G(z)) (non_saturating), log(1 - D(G(z))) (minimax), or the
    least-squares / Wasserstein(-GP) pair, per `loss`.

    Two optimizers: compile(d_optimizer=..., g_optimizer=...), both
    `default_optimizer(loss)` when not given. `model.optimizer` is the generator's,
    so its `iterations` counts train steps (what TensorBoard and learning-rate
    callbacks see); `d_optimizer.iterations` counts d_steps times as many.

    Discriminator levers, all off by default: loss="hinge" (Lim and Ye 2017;
    real_target is ignored); r1_weight > 0 adds the R1 penalty on real data
    (Mescheder et al. 2018) to d_loss; spectral_norm wraps every D layer in
    zoo.layers.SpectralNormalization (Miyato et al. 2018); d_lr_multiplier sets
    D's default learning rate to that multiple of G's (TTUR, Heusel et al.
    2017); augment applies a DiffAugment policy (zoo.augment, Zhao et al. 2020)
    to every image D sees in training, real and fake, with independent draws,
    in D's updates and in G's (G's gradient passes through T(G(z))); the
    training metrics d_real and d_fake are then D's outputs on T(x) and
    T(G(z)). `generate` and `adversarial_losses` (so test_step) see no augmentation.

    `call(z)` (or `call((z, labels))` for the CGAN) returns generated images
    in [0, 1], like `generate(z)`; `discriminate(images)` returns D(x).

    Metrics: d_loss, g_loss (per-example losses of the last D and the G update
    of the step), d_real = mean D(x), d_fake = mean D(G(z)) (for wasserstein_gp
    the sigmoid of critic scores, which are not probabilities)."""

    Config = GANConfig
    tracked = ("d_loss", "g_loss", "d_real", "d_fake")
    optimizer_names = ("d_optimizer", "g_optimizer")
    step_optimizer = "g_optimizer"  # model.optimizer: its iterations count G updates (g_steps per train step)
    # The epochs that fit 5 minutes of training on a 2-core CPU without
    # bfloat16 units (README, "Quality from real runs", also for minibatches of 32).
    xla_pays_on_cpu_nets = base.ADVERSARIAL_NETS_XLA_SPEEDS_UP
    # 240 epochs: about the 5 minutes that 140 took before XLA compiled its step (README, "what was tried")
    training_defaults = {"epochs": 240, "batch_size": 64, "learning_rate": LEARNING_RATE}
    signature_names = ("generate", "discriminate")
    # gan runs saved before its average was the default had none
    legacy_options = {"ema_decay": 0.0}
    ema_networks = ("generator",)  # generate() uses G's moving average when ema_decay > 0
    d_feature_output = False  # D returns [logit, features] for an auxiliary head (zoo.infogan)

    @classmethod
    def training_defaults_for(cls, options):
        """training_defaults, with wasserstein_gp's own learning rate (1e-4)."""
        loss = options.get("loss", cls.Config().loss)
        return {**super().training_defaults_for(options), "learning_rate": default_learning_rate(loss)}

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        for name in ("d_steps", "g_steps"):
            steps = getattr(c, name)
            if int(steps) != steps or steps < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
        if not 0.0 < c.real_target <= 1.0:
            raise ValueError(f"real_target must be in (0, 1], got {c.real_target!r}")
        if not 0.0 <= c.d_dropout < 1.0:
            raise ValueError(f"d_dropout must be in [0, 1), got {c.d_dropout!r}")
        if not c.r1_weight >= 0.0:
            raise ValueError(f"r1_weight must be >= 0, got {c.r1_weight!r}")
        if not c.width > 0.0:
            raise ValueError(f"width must be > 0, got {c.width!r}")
        if not c.d_lr_multiplier > 0.0:
            raise ValueError(f"d_lr_multiplier must be > 0, got {c.d_lr_multiplier!r}")
        if isinstance(c.d_hidden, bool) or not float(c.d_hidden).is_integer() or c.d_hidden < 0:
            raise ValueError(f"d_hidden must be an integer >= 0, got {c.d_hidden!r}")
        self.augment_policy = augment.parse(c.augment)
        self.d_loss_fn, self.g_loss_fn = losses.get(c.loss)
        cond = self.num_classes if self.conditional else 0
        self.generator = nets.generator(c.net, self.latent_dim + cond, self.image_shape, width=c.width)
        self.discriminator = nets.discriminator(
            c.net, self.image_shape, cond_dim=cond, dropout=c.d_dropout, spectral_norm=c.spectral_norm,
            conditioning=getattr(c, "conditioning", "concat"),  # a CGANConfig field only
            width=c.width,
            # (the DCGAN-sized D's batch norm only) Off for the penalties on
            # gradients at each example, which batch statistics would tie to the
            # batch (Gulrajani et al. use no batch norm in the critic), and with
            # spectral norm, which takes its place (Miyato et al.).
            batch_norm=not (c.spectral_norm or c.r1_weight or losses.has_gradient_penalty(c.loss)),
            feature_output=self.d_feature_output,
            dense_units=int(c.d_hidden),
        )
        self.build_ema()
        self.built = True

    # -- optimizers ------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        return {
            "d_optimizer": self.discriminator.trainable_variables,
            "g_optimizer": self.generator.trainable_variables,
        }

    def compile_defaults(self, learning_rate=None):
        """compile() kwargs that train.run uses: two Adam(2e-4, beta_1=0.5), the
        DCGAN paper's (WGAN-GP: Adam(1e-4, 0, 0.9)); learning_rate overrides both.
        D's learning rate is d_lr_multiplier times G's (TTUR, Heusel et al. 2017)."""
        c = self.config
        return {
            "d_optimizer": default_optimizer(c.loss, learning_rate, c.d_lr_multiplier),
            "g_optimizer": default_optimizer(c.loss, learning_rate),
        }

    def _require_compiled(self):
        if self.d_optimizer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not compiled: call compile(d_optimizer=..., g_optimizer=...)"
            )

    # -- the networks at the [0, 1] edge ------------------------------------
    def condition(self, labels):
        """The one-hot label vector (CGAN) or None."""
        if not self.conditional:
            return None
        return self.one_hot(self.require_labels(labels))

    def _fake(self, z, cond, training, averaged=False):
        """G(z) (G([z, y]) for the CGAN) in [-1, 1]; averaged: G's moving average (zoo.ema)."""
        z = self.generator_input(z)
        if cond is not None:
            z = tf.concat([z, cond], axis=-1)
        if averaged:
            return self.averaged_call("generator", z, training=training)
        return self.generator(z, training=training)

    def _d_logits(self, x, cond, training):
        """D's logits [B] of x in [-1, 1]."""
        logits = self.discriminator([x, cond] if cond is not None else x, training=training)
        return tf.reshape(tf.cast(logits, tf.float32), [-1])

    # Hooks of models that extend the game (zoo.infogan): what G reads of z,
    # a head on D's features, and a loss on the fakes that both players add.
    def generator_input(self, z):
        """What G reads of a draw z ~ N(0, I) [B, latent_dim]: z itself."""
        return z

    def _d_outputs(self, x, cond, training):
        """(D's logits [B] of x in [-1, 1], an auxiliary head's outputs or None)."""
        return self._d_logits(x, cond, training), None

    def _fake_terms(self, fake_aux, z):
        """Per-example loss [B] on fakes G(z), given the auxiliary head's
        outputs on them, that D and G both add to theirs; None: no such term."""
        return None

    @staticmethod
    def _plus(loss, term):
        return loss if term is None else loss + term

    def _augment(self, x, seed, stream):
        """DiffAugment T(x) of D's input x [-1, 1] (zoo.augment), drawn from `stream`
        of the step's seed; x itself when `augment` is off."""
        return augment.apply_stream(x, self.augment_policy, seed, stream)

    def _seed(self, optimizer, stream, offset=0):
        step = tf.cast(optimizer.iterations, tf.int64) + offset
        return base.step_seed(self.seed, step, stream)

    # -- what the model can do -----------------------------------------------
    def generate(self, n_or_z: int | base.TensorLike, labels: base.TensorLike | None = None, seed: int | None = None) -> tf.Tensor:
        """Images (G(z) + 1) / 2 from z ~ N(0, I), with G's moving average when ema_decay > 0.

        Args:
          n_or_z: a count n (z drawn now), or z [B, latent_dim] as given.
          labels: cgan: [B] ints, or one int for every row.
          seed: the draw's seed when n_or_z is a count.

        Returns:
          Images [B, H, W, C], float32 in [0, 1]."""
        z = self.noise(n_or_z, seed)
        cond = None
        if self.conditional:
            cond = self.one_hot(self.as_labels(self.require_labels(labels), tf.shape(z)[0]))
        return base.from_tanh(self._fake(z, cond, training=False, averaged=True))

    def discriminate(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """D(x) = sigmoid(logit) [B] for images in [0, 1] (CGAN: D(x | y))."""
        images = tf.cast(images, tf.float32)
        cond = self.condition(labels)
        return tf.sigmoid(self._d_logits(base.to_tanh(images), cond, training=False))

    def call(self, inputs, training=False):
        """z -> generated images in [0, 1]; the CGAN takes (z, labels)."""
        if self.conditional:
            z, labels = inputs
            return self.generate(tf.cast(z, tf.float32), labels)
        z = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        return self.generate(tf.cast(z, tf.float32))

    # -- the game ----------------------------------------------------------------
    def adversarial_losses(self, images, labels=None, z=None, seed=None, training=False):
        """Per-example {d_loss, g_loss, d_real, d_fake} on real images in [0, 1]
        and fakes G(z) (z drawn from `seed`, replica-sliced, when not given).
        No update; d_loss has no gradient or R1 penalty, D sees no augmentation."""
        images = tf.cast(images, tf.float32)
        cond = self.condition(labels)
        if z is None:
            z = base.replica_normal(tf.shape(images)[0], self.latent_dim, seed)
        fake = self._fake(z, cond, training)
        real_logits = self._d_logits(base.to_tanh(images), cond, training)
        fake_logits, fake_aux = self._d_outputs(fake, cond, training)
        term = self._fake_terms(fake_aux, z)
        out = {
            "d_loss": self._plus(self.d_loss_fn(real_logits, fake_logits, self.config.real_target), term),
            "g_loss": self._plus(self.g_loss_fn(fake_logits), term),
            "d_real": tf.sigmoid(real_logits),
            "d_fake": tf.sigmoid(fake_logits),
        }
        if term is not None:
            out["info_loss"] = term
        return out

    def discriminator_step(self, images, labels=None, seed=None):
        """One update of D on real images (in [0, 1]) and as many fakes G(z), G
        fixed; z from `seed` (default: from d_optimizer.iterations). Returns the
        per-example {d_loss, d_real, d_fake} before the update."""
        self._require_compiled()
        images = tf.cast(images, tf.float32)
        if seed is None:
            seed = self._seed(self.d_optimizer, D_NOISE)
        cond = self.condition(labels)
        batch = tf.shape(images)[0]
        z = base.replica_normal(batch, self.latent_dim, seed)
        # G is fixed here, but in training mode: its (synchronized) batch norm
        # normalises with batch statistics, as in the G step.
        fake = self._augment(tf.stop_gradient(self._fake(z, cond, training=True)), seed, AUG_FAKE)
        real = self._augment(base.to_tanh(images), seed, AUG_REAL)
        d_batch_norm = nets.has_batch_norm(self.discriminator)

        def loss_and_logits():
            if d_batch_norm:  # real and fake batches normalised apart, as DCGAN trains D
                real_logits = self._d_logits(real, cond, True)
                fake_logits, fake_aux = self._d_outputs(fake, cond, True)
            else:  # one D pass over both: the same logits as two passes, and faster
                both = tf.concat([real, fake], axis=0)
                both_cond = tf.concat([cond, cond], axis=0) if cond is not None else None
                logits, aux = self._d_outputs(both, both_cond, True)
                real_logits, fake_logits = tf.split(logits, 2)
                fake_aux = None if aux is None else tf.split(aux, 2)[1]
            term = self._fake_terms(fake_aux, z)
            d_loss = self._plus(self._d_loss(real_logits, fake_logits, real, fake, cond, seed), term)
            return d_loss, real_logits, fake_logits, term

        per_example, real_logits, fake_logits, term = base.minimize(
            self.d_optimizer, self.optimizer_variables()["d_optimizer"], loss_and_logits
        )
        out = {"d_loss": per_example, "d_real": tf.sigmoid(real_logits), "d_fake": tf.sigmoid(fake_logits)}
        if term is not None:
            out["info_loss"] = term
        return out

    def generator_step(self, batch_size=None, labels=None, seed=None):
        """One update of G on `batch_size` fresh fakes (CGAN: one per label), D
        fixed; z from `seed` (default: from g_optimizer.iterations). Returns the
        per-example g_loss before the update."""
        self._require_compiled()
        if seed is None:
            seed = self._seed(self.g_optimizer, G_NOISE)
        cond = self.condition(labels)
        if batch_size is None:
            if cond is None:
                raise ValueError("generator_step needs batch_size (or labels)")
            batch_size = tf.shape(cond)[0]
        z = base.replica_normal(batch_size, self.latent_dim, seed)

        def loss():
            fake_logits, fake_aux = self._d_outputs(self._augment(self._fake(z, cond, True), seed, AUG_FAKE), cond, True)
            return self._plus(self.g_loss_fn(fake_logits), self._fake_terms(fake_aux, z))

        return base.minimize(self.g_optimizer, self.optimizer_variables()["g_optimizer"], loss)

    def _d_loss(self, real_logits, fake_logits, real, fake, cond, seed):
        """Per-example d_loss, with the gradient penalty for wasserstein_gp and the
        R1 penalty when r1_weight > 0. real and fake are D's inputs: with `augment`
        the augmented images, so both penalties are taken where D is trained (the
        WGAN-GP mix of augmented reals and fakes, R1 at the augmented reals)."""
        per_example = self.d_loss_fn(real_logits, fake_logits, self.config.real_target)
        if losses.has_gradient_penalty(self.config.loss):
            mix_seed = base.replica_seed(tf.random.experimental.stateless_fold_in(seed, GP_MIX))
            per_example += losses.gradient_penalty(
                lambda x: self._d_logits(x, cond, True), real, fake, mix_seed, weight=self.config.gp_weight
            )
        if self.config.r1_weight:
            per_example += losses.r1_penalty(lambda x: self._d_logits(x, cond, True), real, self.config.r1_weight)
        return per_example

    def simultaneous_step(self, images, labels=None, seed=None):
        """One D update and one G update from the same fakes G(z) and the same D:

            D descends mean_i d_loss(D(x_i), D(G(z_i))),  G descends mean_i g_loss(D(G(z_i))),

        both gradients taken at the current (D, G). z from `seed` (default: from
        g_optimizer.iterations). Returns the per-example losses before the update."""
        self._require_compiled()
        images = tf.cast(images, tf.float32)
        if seed is None:
            seed = self._seed(self.g_optimizer, G_NOISE)
        cond = self.condition(labels)
        z = base.replica_normal(tf.shape(images)[0], self.latent_dim, seed)
        real = self._augment(base.to_tanh(images), seed, AUG_REAL)

        def losses_and_logits():
            fake = self._augment(self._fake(z, cond, training=True), seed, AUG_FAKE)
            # Two D passes, not one over the concatenation: G's gradient then
            # flows back through the fake half only.
            real_logits = self._d_logits(real, cond, True)
            fake_logits, fake_aux = self._d_outputs(fake, cond, True)
            term = self._fake_terms(fake_aux, z)
            d_per_example = self._plus(self._d_loss(real_logits, fake_logits, real, fake, cond, seed), term)
            g_per_example = self._plus(self.g_loss_fn(fake_logits), term)
            return d_per_example, g_per_example, real_logits, fake_logits, term

        variables = self.optimizer_variables()
        d_per_example, g_per_example, real_logits, fake_logits, term = base.minimize_simultaneously(
            [(self.d_optimizer, variables["d_optimizer"]), (self.g_optimizer, variables["g_optimizer"])],
            losses_and_logits,
        )
        out = {
            "d_loss": d_per_example,
            "g_loss": g_per_example,
            "d_real": tf.sigmoid(real_logits),
            "d_fake": tf.sigmoid(fake_logits),
        }
        if term is not None:
            out["info_loss"] = term
        return out

    @property
    def real_batches_per_step(self):
        return int(self.config.d_steps)

    def train_steps_taken(self):
        """g_optimizer.iterations / g_steps: G steps g_steps times per train step."""
        return self.g_optimizer.iterations // int(self.config.g_steps)

    def train_step(self, data):
        """Algorithm 1: d_steps = k D updates, each on its own minibatch of data
        (row i of the batch goes to update i mod k) and fresh noise (seeded by
        d_optimizer.iterations), then one G update on a fresh batch of as many
        fakes as the last minibatch's rows (seeded by g_optimizer.iterations),
        then g_steps - 1 more G updates on fresh noise. With update=simultaneous
        the last D update and the first G update are one `simultaneous_step`.
        The tracked g_loss is that of the last G update."""
        images, labels = base.unpack(data)
        if self.conditional:
            self.require_labels(labels)
        k = int(self.config.d_steps)
        # Strided, not blocks: under MirroredStrategy each replica holds one
        # contiguous block of the global batch, and when N replicas divide the
        # minibatch m (train.run checks it), so that each block of k m / N rows
        # is a multiple of k, the rows i mod k of every block together are the
        # rows i mod k of the global batch: update t sees one device's data.
        minibatches = [(images[t::k], labels[t::k] if labels is not None else None) for t in range(k)]
        simultaneous = self.config.update == "simultaneous"
        d_start = tf.cast(self.d_optimizer.iterations, tf.int64)
        for t in range(k - int(simultaneous)):
            seed = base.step_seed(self.seed, d_start + t, D_NOISE)
            d = self.discriminator_step(*minibatches[t], seed=seed)
        last_images, last_labels = minibatches[-1]
        if simultaneous:
            d = self.simultaneous_step(last_images, last_labels)
            g_loss = d["g_loss"]
        else:
            g_loss = self.generator_step(tf.shape(last_images)[0], last_labels)
        for _ in range(int(self.config.g_steps) - 1):  # noise seeded by g_optimizer.iterations: fresh each time
            g_loss = self.generator_step(tf.shape(last_images)[0], last_labels)
        self.update_ema()
        return self.track(**{**d, "g_loss": g_loss})

    def test_step(self, data):
        """The losses with fixed noise (same for every evaluation), no update."""
        images, labels = base.unpack(data)
        seed = base.step_seed(self.seed, 0, EVAL_NOISE)
        return self.track(**self.adversarial_losses(images, labels, seed=seed))

    # -- serving ---------------------------------------------------------------
    def _serve_discriminate(self):
        if self.conditional:
            return (lambda images, labels: {"probability": self.discriminate(images, labels)}), (
                "images",
                "labels",
            )
        return (lambda images: {"probability": self.discriminate(images)}), ("images",)


@keras.saving.register_keras_serializable(package="genzoo")
class DCGAN(GAN):
    """The GAN with the TensorFlow tutorial's DCGAN nets (nets.generator/
    discriminator "conv"; for 28x28x1: Dense 7*7*256 -> ConvT 128 -> 64 -> 1
    tanh with BN + LeakyReLU; D Conv 64 s2 -> 128 s2 -> Dense 1 with dropout,
    by default with a hidden Dense 512 + LeakyReLU before the logit (d_hidden);
    for 32x32 and 64x64 images the DCGAN paper's nets, see zoo.nets, with
    that hidden layer too unless d_hidden=0),
    latent_dim 100; by default at half those widths (width=0.5) and with an
    average of G (ema_decay=0.999), which give better samples in its budget."""

    Config = DCGANConfig
    # Minibatches of 16: 4x the updates of 64 for about 1.5x the time per epoch;
    # at 22 epochs on mnist5k FCD 23.1 against 31.1 with 32 and 44.5 with 64
    # (README, "what was tried"). With d_hidden its FCD levels off near 12 from
    # epoch 27 (2.5 minutes on 2 cores with XLA at 30).
    training_defaults = {"epochs": 30, "batch_size": 16, "learning_rate": LEARNING_RATE}
    # dcgan runs saved before these options existed had the tutorial's widths, no average and no hidden layer in D
    legacy_options = {"width": 1.0, "ema_decay": 0.0, "d_hidden": 0}


@dataclasses.dataclass
class CGANConfig(GANConfig):
    conditioning: str = option(
        "projection",
        "how D sees the label: concat (joined to its input) or projection (Miyato and Koyama 2018)",
        nets.CONDITIONINGS,
    )
    # At 80 epochs on mnist5k the average took cgan from FCD 22.7 to 13.0 and
    # conditional accuracy from 0.938 to 0.962 (README).
    ema_decay: float = option(0.999, ema.HELP)


@keras.saving.register_keras_serializable(package="genzoo")
class CGAN(GAN):
    """The conditional GAN (Mirza and Osindero 2014): G([z, y]) and D(x, y) with
    y one-hot; the same game on pairs (x, y) of the data. Train on a dataset of
    (images, labels); generate(n, labels=y) draws class y. With
    conditioning="projection" D is the projection discriminator
    (nets.discriminator): logit = w^T phi(x) + (V y)^T phi(x)."""

    Config = CGANConfig
    conditional = True
    # cgan runs saved before these options existed joined y to D's input and had no average
    legacy_options = {"conditioning": "concat", "ema_decay": 0.0}
    training_defaults = {"epochs": 120, "batch_size": 64, "learning_rate": LEARNING_RATE}
