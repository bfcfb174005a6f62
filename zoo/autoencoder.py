"""The deterministic autoencoder: x -> z = E(x) -> D(z), trained on reconstruction."""

import dataclasses

import keras
import tensorflow as tf

from zoo import base, distributions, nets, samplers
from zoo.base import option


# 40 Gaussians against 10, refitted to the codes of the default runs at
# bfe053c (three EM seeds each): FCD / floor ae 1.98 against 2.75, vae 1.85
# against 3.20, aae 2.20 against 2.67; a sample's distance to its nearest
# train image stays about a test image's (median 0.86-0.95 of it, 0.87-1.0
# with 10): no replay of training images (README, "what was tried").
@samplers.with_sampler_options(sampler="gmm", components=40)
@dataclasses.dataclass
class AEConfig:
    # 32 against 16, 25 epochs on mnist5k: probe 0.948 against 0.926 (raw
    # pixels 0.918), FCD 11.4 against 9.3 (README, "what was tried").
    latent_dim: int = option(32, "size of the code z")
    net: str = option("conv", "encoder/decoder architecture", nets.KINDS)
    loss: str = option("bce", "reconstruction loss: pixel cross-entropy or squared error", ("bce", "mse"))
    code_momentum: float = option(0.99, "momentum of the moving code mean and covariance")


@keras.saving.register_keras_serializable(package="genzoo")
class AE(samplers.CodeSampler, base.ZooModel):
    """Reconstruction loss per image: bce = sum -[x log x' + (1-x) log(1-x')], or
    mse = sum (x - x')^2, with x' = sigmoid(D(E(x))).

    An AE has no prior, so its sampler "prior" (the default of `generate`) is a
    Gaussian of the training codes: z = m + L eps, eps ~ N(0, I), L L^T = C,
    where m and C are moving averages (momentum `code_momentum`, like batch
    norm's moving statistics) of the batch mean and batch covariance of E(x),
    updated by every train step.
    m and C are non-trainable weights, so they are saved, checkpointed and
    exported with the model. Before training they are 0 and I. (The samplers
    "gaussian" and "gmm" are fitted to all training codes after training.)"""

    Config = AEConfig
    xla_pays_on_cpu_nets = base.AUTOENCODER_NETS_XLA_SPEEDS_UP
    training_defaults = {"epochs": 25, "batch_size": 64, "learning_rate": 1e-3}
    legacy_options = {"sampler_components": 10}  # runs saved before the default was 40
    tracked = ("loss",)
    signature_names = ("generate", "encode", "decode", "reconstruct")

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        self.encoder = nets.encoder(c.net, self.image_shape, self.latent_dim)
        self.decoder = nets.decoder(c.net, self.latent_dim, self.image_shape)
        j = self.latent_dim
        self.code_mean = self.add_weight(
            shape=(j,), initializer="zeros", trainable=False, aggregation="mean", name="code_mean"
        )
        self.code_cov = self.add_weight(
            shape=(j, j), initializer="identity", trainable=False, aggregation="mean", name="code_cov"
        )
        self.built = True

    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.encoder(images)

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return distributions.likelihood_mean(self.decoder(z))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode(self.encode(images))

    def code_scale(self):
        """L with L L^T = C (+ 1e-5 I for a positive definite factor)."""
        cov = tf.convert_to_tensor(self.code_cov)
        return tf.linalg.cholesky(cov + 1e-5 * tf.eye(self.latent_dim))

    def prior_codes(self, eps, labels=None):
        """z = m + L eps, the moving-average Gaussian of codes (see class doc)."""
        return self.code_mean + tf.linalg.matvec(self.code_scale(), eps)

    def reconstruction_loss(self, images, logits):
        """Per-image reconstruction loss of the chosen kind (see class doc)."""
        if self.config.loss == "bce":
            return distributions.bernoulli_nll(images, logits)
        return tf.reduce_sum(tf.square(images - tf.sigmoid(logits)), axis=[1, 2, 3])

    def _update_code_statistics(self, codes):
        m = self.config.code_momentum
        mean = tf.reduce_mean(codes, axis=0)
        centred = codes - mean
        cov = tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(codes)[0], codes.dtype)
        self.code_mean.assign(m * self.code_mean + (1 - m) * mean)
        self.code_cov.assign(m * self.code_cov + (1 - m) * cov)

    def train_step(self, data):
        images, _ = base.unpack(data)

        def loss_and_codes():
            codes = self.encoder(images, training=True)
            return self.reconstruction_loss(images, self.decoder(codes, training=True)), codes

        loss, codes = base.minimize(self.optimizer, self.trainable_variables, loss_and_codes)
        self._update_code_statistics(tf.stop_gradient(codes))
        return self.track(loss=loss)

    def test_step(self, data):
        images, _ = base.unpack(data)
        return self.track(loss=self.reconstruction_loss(images, self.decoder(self.encoder(images))))

