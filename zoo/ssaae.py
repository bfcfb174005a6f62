"""The semi-supervised adversarial autoencoder (Makhzani et al. 2016,
"Adversarial Autoencoders", section 5).

The encoder q(y, z | x) gives a class y = softmax(l(x)) over K classes and a
style code z(x) [S]; the decoder reads both, x' = sigmoid(P([y, z])). Every
train step makes the paper's phases, each its own update:

1. reconstruction, encoder and decoder (ae_optimizer):
       sum_pixels -[x log x' + (1 - x) log(1 - x')]
2. regularisation, the two latent discriminators (d_optimizer): D_cat tells
   one-hot draws of Cat(1/K) ("real") from y(x), D_style tells draws of
   N(0, I) from z(x):
       d_loss(D_cat(y~), D_cat(y(x))) + d_loss(D_style(z~), D_style(z(x)))
3. regularisation, the encoder as their generator (g_optimizer):
       g_loss(D_cat(y(x))) + g_loss(D_style(z(x)))
4. semi-supervised classification, the encoder (c_optimizer), on a minibatch
   (x_l, c_l) of the labelled examples:   -log q(y = c_l | x_l)

with (d_loss, g_loss) the pair `losses.get(config.loss)`. Steps 1-3 read the
unlabelled minibatch (the data's own labels are never used). The labelled
examples, `labelled` of them, are weights of the model, set by
set_labelled(images, labels) (train.run takes the same number per class from
the train split); each step draws `labelled_batch` of them. labelled=0 leaves
out step 4: the unsupervised AAE whose K categories cluster the data
(section 6). Until set_labelled runs, the labelled rows hold label -1 and
step 4 moves nothing (class_loss 0).

z of `generate` is [category code K, style S] ~ N(0, I). With the prior
sampler (`sampler="prior"`) the class is argmax(z[:K]) (zoo.categorical,
uniform over the K classes), shown to the decoder as a one-hot, and the style
is z[K:], so `with_category(z, k)` picks class k only with that sampler;
the default sampler, a Gaussian mixture fitted to the training codes
[q(y | x), z(x)] after training (zoo.samplers), measures better.
`classify(x)` = q(y | x).

Under tf.distribute every loss is a global-batch mean, and the prior draws
and the labelled rows of a step are each replica's slice of one global draw
(base.replica_normal, aae.replica_randint), so N replicas make one device's
update.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from zoo import aae, base, distributions, losses, nets, samplers
from zoo.base import option
from zoo.categorical import CategoricalCode

SSAAE_LOSSES = ("non_saturating", "minimax", "least_squares", "hinge")  # the pairs without a penalty term
CAPABILITY = "semi_supervised"

# Random streams of one train step (base.step_seed).
_CATEGORY, _STYLE, _LABELLED = 1, 2, 3
_EVAL = 10


# The default run (22 epochs) at 00bbc0e: FCD 10.7 (2.49x), recall 0.79 from a
# 40-component gmm fitted to the codes, against 44.5 (10.4x), 0.57 from the
# prior, whose class code the decoder follows for only 0.21 of samples
# (README, "what was tried").
@samplers.with_sampler_options(sampler="gmm", components=40)
@dataclasses.dataclass
class SSAAEConfig:
    style_dim: int = option(16, "S, the size of the style code z (the class y takes the K others)")
    net: str = option("conv", "encoder/decoder architecture", nets.KINDS)
    labelled: int = option(
        100, "labelled train images the classification phase learns from, the same number per class "
        "(the paper's 100 of MNIST); 0: none, the unsupervised AAE whose categories cluster the data"
    )
    labelled_batch: int = option(32, "labelled images per train step's classification phase")
    loss: str = option("non_saturating", "adversarial loss of the two latent games", SSAAE_LOSSES)


@keras.saving.register_keras_serializable(package="genzoo")
class SSAAE(CategoricalCode, base.MultiOptimizer, samplers.CodeSampler, base.ZooModel):
    """The semi-supervised AAE; see the module docstring.

    compile(ae_optimizer, d_optimizer, g_optimizer, c_optimizer): Adam, the
    latent games at aae.GAME_LR_RATIO of the reconstruction's rate (as the
    AAE). encode(x) -> [q(y | x), z(x)]; decode([y, z]) -> images in [0, 1];
    classify(x) -> q(y | x) [B, K]; generate(z) decodes [one-hot of
    argmax(z[:K]), z[K:]]."""

    Config = SSAAEConfig
    capabilities = frozenset({CAPABILITY})
    tracked = ("reconstruction", "d_loss", "g_loss", "class_loss", "d_category", "d_style")
    signature_names = ("generate", "encode", "decode", "reconstruct", "classify")
    optimizer_alias = "ae_optimizer"
    xla_pays_on_cpu_nets = base.AUTOENCODER_NETS_XLA_SPEEDS_UP
    training_defaults = {"epochs": 22, "batch_size": 64, "learning_rate": 1e-3}

    @property
    def optimizer_names(self):
        phases = ("ae_optimizer", "d_optimizer", "g_optimizer")
        return phases + ("c_optimizer",) if self.config.labelled else phases

    @property
    def categories(self):
        """K: the data's classes (10 for data without classes)."""
        return self.num_classes if self.num_classes >= 2 else 10

    def latent_size(self):
        return self.categories + int(self.config.style_dim)

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if c.style_dim < 1 or c.labelled < 0 or c.labelled_batch < 1:
            raise ValueError(f"style_dim and labelled_batch must be >= 1 and labelled >= 0; got "
                             f"{c.style_dim}, {c.labelled_batch}, {c.labelled}")
        if c.labelled and self.num_classes < 2:
            raise ValueError(f"labelled={c.labelled} needs classes (num_classes >= 2, got {self.num_classes}); "
                             f"use labelled=0 for data without labels")
        self.d_loss_fn, self.g_loss_fn = losses.get(c.loss)
        self.encoder = nets.encoder(c.net, self.image_shape, self.latent_dim)
        self.decoder = nets.decoder(c.net, self.latent_dim, self.image_shape)
        self.category_discriminator = nets.critic(self.categories, name="category_discriminator")
        self.style_discriminator = nets.critic(c.style_dim, name="style_discriminator")
        n = c.labelled
        self.labelled_images = self.add_weight(shape=(n, *self.image_shape), initializer="zeros", trainable=False,
                                               aggregation="only_first_replica", name="labelled_images")
        self.labelled_labels = self.add_weight(shape=(n,), dtype="int32", initializer=keras.initializers.Constant(-1),
                                               trainable=False, aggregation="only_first_replica",
                                               name="labelled_labels")
        self.built = True

    # -- the labelled examples -------------------------------------------------------
    @property
    def labelled_count(self):
        """How many labelled examples the classification phase reads (config.labelled)."""
        return int(self.config.labelled)

    def set_labelled(self, images, labels):
        """Takes the labelled examples: images [labelled, H, W, C] in [0, 1]
        and their labels [labelled] in [0, K). Raises ValueError otherwise."""
        images, labels = np.asarray(images, np.float32), np.asarray(labels).astype(np.int64).reshape(-1)
        expected = (self.labelled_count, *self.image_shape)
        if images.shape != expected or labels.shape != (self.labelled_count,):
            raise ValueError(f"set_labelled takes {self.labelled_count} images of shape {self.image_shape} and as "
                             f"many labels (the model's labelled option); got {images.shape} and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.categories):
            raise ValueError(f"labels must be in [0, {self.categories}); got {labels.min()} to {labels.max()}")
        self.labelled_images.assign(images)
        self.labelled_labels.assign(labels.astype(np.int32))

    # -- what the model can do ---------------------------------------------------------
    def _outputs(self, images, training=False):
        """(class logits [B, K], style z [B, S]) of q(y, z | x)."""
        out = tf.cast(self.encoder(tf.cast(images, tf.float32), training=training), tf.float32)
        return out[:, : self.categories], out[:, self.categories :]

    def classify(self, images: base.TensorLike) -> tf.Tensor:
        """q(y | x) [B, K], class probabilities."""
        return tf.nn.softmax(self._outputs(images)[0])

    def _codes(self, images, training=False):
        """[q(y | x), z(x)] [B, K + S], what the decoder reads."""
        logits, style = self._outputs(images, training)
        return tf.concat([tf.nn.softmax(logits), style], axis=-1)

    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """[q(y | x), z(x)] [B, K + S]."""
        return self._codes(images)

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        """Images in [0, 1] of codes [y, z] [B, K + S] (y a one-hot or class probabilities)."""
        return distributions.likelihood_mean(self.decoder(tf.cast(z, tf.float32)))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode(self.encode(images))

    def prior_codes(self, eps, labels=None):
        """[one-hot of argmax(eps[:K]), eps[K:]]: a class drawn uniformly, a style from N(0, I)."""
        return self.one_hot_category(eps)

    # -- losses ----------------------------------------------------------------------
    def reconstruction_loss(self, images, training=False):
        codes = self._codes(images, training)
        return distributions.bernoulli_nll(images, tf.cast(self.decoder(codes, training=training), tf.float32))

    def _prior_draws(self, n, seed):
        """This replica's (one-hot classes [n, K], styles [n, S]) of one global draw."""
        classes = aae.replica_randint(n, self.categories, tf.random.experimental.stateless_fold_in(seed, _CATEGORY))
        styles = base.replica_normal(n, self.config.style_dim, tf.random.experimental.stateless_fold_in(seed, _STYLE))
        return tf.one_hot(classes, self.categories), styles

    def discriminator_loss(self, images, seed, training=False):
        """(per-example d_loss of both games, D_cat's and D_style's sigmoid on the codes)."""
        logits, style = self._outputs(images, training)
        y, style = tf.stop_gradient(tf.nn.softmax(logits)), tf.stop_gradient(style)
        y_prior, style_prior = self._prior_draws(tf.shape(images)[0], seed)
        d_cat = self.category_discriminator(y, training=training)
        d_style = self.style_discriminator(style, training=training)
        loss = (self.d_loss_fn(self.category_discriminator(y_prior, training=training), d_cat)
                + self.d_loss_fn(self.style_discriminator(style_prior, training=training), d_style))
        return loss, tf.sigmoid(tf.reshape(d_cat, [-1])), tf.sigmoid(tf.reshape(d_style, [-1]))

    def generator_loss(self, images, training=False):
        """Per-example g_loss of the encoder's y and z against both discriminators."""
        logits, style = self._outputs(images, training)
        return (self.g_loss_fn(self.category_discriminator(tf.nn.softmax(logits), training=training))
                + self.g_loss_fn(self.style_discriminator(style, training=training)))

    def classification_loss(self, seed, training=False):
        """-log q(y = c | x) [labelled_batch per replica] of labelled rows drawn
        (with replacement) from the global draw of `seed`; 0 for rows whose
        label is unset (-1)."""
        if self.config.labelled_batch % base.num_replicas():
            raise ValueError(f"labelled_batch={self.config.labelled_batch} does not split evenly over the "
                             f"{base.num_replicas()} replicas; use a multiple of {base.num_replicas()}")
        batch = self.config.labelled_batch // base.num_replicas()
        rows = aae.replica_randint(batch, self.labelled_count, seed)
        images = tf.gather(tf.convert_to_tensor(self.labelled_images), rows)
        labels = tf.gather(tf.convert_to_tensor(self.labelled_labels), rows)
        logits, _ = self._outputs(images, training)
        known = labels >= 0
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits)
        return tf.where(known, nll, 0.0)

    # -- the train step ----------------------------------------------------------------
    def _seed(self, stream):
        return base.step_seed(self.seed, self.d_optimizer.iterations, stream)

    def train_step(self, data):
        images, _ = base.unpack(data)  # the data's labels are never read: only the labelled weights
        variables = self.optimizer_variables()
        seed = self._seed(0)
        reconstruction = base.minimize(self.ae_optimizer, variables["ae_optimizer"],
                                       lambda: self.reconstruction_loss(images, training=True))
        d_loss, d_category, d_style = base.minimize(self.d_optimizer, variables["d_optimizer"],
                                                    lambda: self.discriminator_loss(images, seed, training=True))
        g_loss = base.minimize(self.g_optimizer, variables["g_optimizer"],
                               lambda: self.generator_loss(images, training=True))
        class_loss = tf.zeros([1])
        if self.labelled_count:
            labelled_seed = tf.random.experimental.stateless_fold_in(seed, _LABELLED)
            class_loss = base.minimize(self.c_optimizer, variables["c_optimizer"],
                                       lambda: self.classification_loss(labelled_seed, training=True))
        return self.track(reconstruction=reconstruction, d_loss=d_loss, g_loss=g_loss, class_loss=class_loss,
                          d_category=d_category, d_style=d_style)

    def test_step(self, data):
        images, _ = base.unpack(data)
        seed = self._seed(_EVAL)
        d_loss, d_category, d_style = self.discriminator_loss(images, seed)
        class_loss = self.classification_loss(tf.random.experimental.stateless_fold_in(seed, _LABELLED)) \
            if self.labelled_count else tf.zeros([1])
        return self.track(reconstruction=self.reconstruction_loss(images), d_loss=d_loss,
                          g_loss=self.generator_loss(images), class_loss=class_loss,
                          d_category=d_category, d_style=d_style)

    # -- optimizers --------------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        encoder = self.encoder.trainable_variables
        variables = {
            "ae_optimizer": encoder + self.decoder.trainable_variables,
            "d_optimizer": self.category_discriminator.trainable_variables
            + self.style_discriminator.trainable_variables,
            "g_optimizer": encoder,
        }
        if self.labelled_count:
            variables["c_optimizer"] = encoder
        return variables

    def compile_defaults(self, learning_rate=None):
        """The AAE's (aae.default_optimizers: Adam(lr) for the reconstruction,
        Adam(lr * aae.GAME_LR_RATIO, beta_1=0.5) for the latent games) and
        Adam(lr) for the classification, lr = learning_rate or 1e-3."""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        defaults = aae.default_optimizers(lr)
        if self.labelled_count:
            defaults["c_optimizer"] = keras.optimizers.Adam(lr)
        return defaults

    # -- serving ------------------------------------------------------------------------
    def _serve_classify(self):
        return (lambda images: {"probabilities": self.classify(images)}), ("images",)
