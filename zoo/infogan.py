"""InfoGAN (Chen et al. 2016, "InfoGAN: Interpretable Representation Learning
by Information Maximizing Generative Adversarial Nets").

The GAN of zoo.gan whose generator input holds latent codes c beside the
noise, and whose discriminator carries an auxiliary head Q on its features
that recovers c from G(z, c). Both players add lambda L_I to their losses,

    D, Q:  min  d_loss + lambda L_I        G:  min  g_loss + lambda L_I,
    L_I = E[-log Q(c | G(z, c))]  (losses.mutual_information_loss),

so that H(c) - L_I, a lower bound on the mutual information I(c; G(z, c)),
is maximised: each code then controls something Q can read back from the
image (on digits, the categorical code becomes the digit, the continuous ones
slant and width, unsupervised).

The codes live inside z ~ N(0, I) [latent_dim], so that every z a user, a
server or train.evaluate draws is a draw of the prior, codes included:

- the categorical code is argmax(z[:K]) (K = `categories`), uniform over
  the K values because the K normal draws are exchangeable; G reads it as a
  one-hot in place of those K numbers;
- the continuous codes are z[K:K+C] (C = `continuous`), each N(0, 1);
- the rest of z is the incompressible noise.

`with_category(z, k)` swaps z's largest of its first K numbers with the k-th:
a draw of the prior conditioned on category k (the swap keeps the K numbers'
distribution), used by train.evaluate (best-permutation agreement of the
categorical code with the true classes) and by anyone who wants category k.
Served as usual: `generate` takes z, so a client picks a category the same way.

Q is a small MLP on the features D's logit reads (nets.discriminator's
feature_output), trained by D's optimizer; G's optimizer moves G only. Under
tf.distribute the codes are part of z, one global draw sliced per replica,
so the GAN's equivalence holds unchanged (tests/mirrored_cases.py).
"""

import dataclasses

import keras
import tensorflow as tf
from keras import layers

from zoo import base, losses
from zoo.base import option
from zoo.categorical import CategoricalCode
from zoo.gan import GAN, GANConfig


@dataclasses.dataclass
class InfoGANConfig(GANConfig):
    categories: int = option(10, "K, values of the categorical code: argmax of z's first K numbers (0: none)")
    continuous: int = option(2, "continuous codes: z's next numbers, each N(0, 1), that Q reads back")
    # gan's recipe otherwise, 240 epochs: 0.25 FCD 11.3 (2.63x), recall 0.78,
    # category accuracy 0.528 (5ee0986); 0.5 FCD 13.2 (3.07x), 0.78, 0.528;
    # 1 (the paper's) 15.5 (3.6x), 0.74, 0.506 (README, "what was tried").
    info_weight: float = option(0.25, "lambda, the weight of L_I = -log Q(c | G(z, c)) in D's and G's losses")
    q_hidden: int = option(128, "units of Q's hidden layer (on D's features)")


def q_head(in_dim, hidden, out_dim, name="q_head"):
    """D's features -> Q's outputs: K categorical logits, then C Gaussian means
    (Chen et al.'s MNIST Q: one hidden layer of 128 on D's last features)."""
    features = keras.Input((in_dim,), name="features")
    h = layers.LeakyReLU(0.2)(layers.Dense(hidden)(features))
    return keras.Model(features, layers.Dense(out_dim, dtype="float32", name="out")(h), name=name)


@keras.saving.register_keras_serializable(package="genzoo")
class InfoGAN(CategoricalCode, GAN):
    """InfoGAN; see the module docstring. Tracked: the GAN's d_loss and g_loss
    (each with lambda L_I, what each player minimises), d_real, d_fake, and
    info_loss = lambda L_I of D's last update."""

    Config = InfoGANConfig
    tracked = GAN.tracked + ("info_loss",)
    d_feature_output = True
    # 200 epochs fit the 5 minutes that gan's 240 passed (5.5-5.6 minutes with
    # Q); FCD of 500 samples 12.2 at epochs 200 and 212 of the 240-epoch run
    # with lambda 0.25, whose learning rate is constant (README, "what was tried").
    training_defaults = {**GAN.training_defaults, "epochs": 200}

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if c.categories < 0 or c.categories == 1 or c.continuous < 0:
            raise ValueError(f"categories must be 0 or >= 2 and continuous >= 0, got {c.categories} and {c.continuous}")
        if c.categories + c.continuous > self.latent_dim:
            raise ValueError(
                f"categories + continuous ({c.categories} + {c.continuous}) must fit in latent_dim ({self.latent_dim})"
            )
        if c.categories + c.continuous == 0:
            raise ValueError("InfoGAN needs a code: set categories >= 2 or continuous >= 1 (or use --model=gan)")
        features = self.discriminator.outputs[1].shape[-1]
        self.q_head = q_head(features, c.q_hidden, c.categories + c.continuous)

    def optimizer_variables(self):
        """D's optimizer moves D and Q; G's moves G."""
        return {
            "d_optimizer": self.discriminator.trainable_variables + self.q_head.trainable_variables,
            "g_optimizer": self.generator.trainable_variables,
        }

    # -- the codes in z -------------------------------------------------------
    @property
    def categories(self):
        return int(self.config.categories)

    def codes(self, z):
        """(categorical code [B], continuous codes [B, C]) of draws z."""
        k = self.categories
        return self.category(z) if k else None, tf.cast(z, tf.float32)[:, k : k + int(self.config.continuous)]

    def generator_input(self, z):
        """[one-hot of argmax(z[:K]), z[K:]]: G sees the category as a one-hot."""
        return self.one_hot_category(z)

    # -- D with Q's head --------------------------------------------------------
    def _d_logits_and_features(self, x, cond, training):
        logits, features = self.discriminator([x, cond] if cond is not None else x, training=training)
        return tf.reshape(tf.cast(logits, tf.float32), [-1]), features

    def _d_outputs(self, x, cond, training):
        logits, features = self._d_logits_and_features(x, cond, training)
        return logits, self.q_head(features, training=training)

    def _d_logits(self, x, cond, training):
        return self._d_logits_and_features(x, cond, training)[0]

    def _fake_terms(self, fake_aux, z):
        """lambda L_I of the fakes G(z) from Q's outputs on them."""
        categories, continuous = self.codes(z)
        k = self.categories
        l_i = losses.mutual_information_loss(fake_aux[:, :k], categories, fake_aux[:, k:], continuous)
        return self.config.info_weight * l_i
