"""VQ-VAE (van den Oord et al. 2017, "Neural discrete representation
learning"), with the gated PixelCNN prior over its code grid trained after it,
as in the paper.

The encoder maps x to a grid of vectors z_e(x) [h, w, D]; each is replaced by
its nearest code vector of a codebook e_1..e_K (`nearest_codes`),
z_q = e_{k*}, k* = argmin_k ||z_e - e_k||^2, and the decoder reads z_q. The
gradient passes from z_q to z_e unchanged (straight-through: the decoder's
input is z_e + sg[z_q - z_e]). Per image, summed over the grid:

    L = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2

with a Bernoulli decoder. The middle (codebook) term is used with
codebook_update="loss"; with "ema" (the paper's appendix) the codebook is
not a trainable weight: after each step, with n_k the number of grid vectors
assigned to code k and m_k their sum over the global batch,

    N_k <- g N_k + (1 - g) n_k,   M_k <- g M_k + (1 - g) m_k,   e_k <- M_k / N~_k,

N~_k = (N_k + eps) / (sum N + K eps) sum N (Laplace smoothing, as the
authors' Sonnet code), starting from N_k = 1, M_k = e_k (as if each code had
been chosen once where it was initialised). Codebook usage is tracked as the
perplexity exp(-sum_k p_k log p_k), p_k = n_k / sum n, of each step's
assignments: K when every code is used equally, 1 when one code takes all.

Generation: a gated PixelCNN (zoo.nets.gated_pixelcnn) models
p(c) = prod_ij p(c_ij | c_<ij) over the code grid. The first `vq_steps` train
steps update the encoder, decoder and codebook; every step after them updates
the prior alone, by maximum likelihood on the codes of the frozen encoder
(-log p(c), summed over the grid). `generate(z)` draws the grid position by
position in raster order by inverse-CDF sampling: with u = Phi(z) (z ~ N(0, I)
[n, h * w], Phi the standard normal CDF), c_ij is the smallest k with
sum_{l <= k} p(l | c_<ij) > u_ij, so one z gives one image, as for every model
of the zoo.

Under tf.distribute every loss is a global-batch mean, the EMA statistics are
all-reduced sums, the restarts draw from the gathered global batch, and which
stage a step belongs to is read from the model's step counter, the same on
every replica.
"""

import dataclasses
import math
import weakref

import keras
import tensorflow as tf

from zoo import base, distributions, nets
from zoo import layers as zoo_layers
from zoo.base import option

CODEBOOK_UPDATES = ("ema", "loss")
LAPLACE_EPSILON = 1e-5  # the Sonnet code's epsilon
_RESTART = 1  # random stream of a train step
# model -> its sample_codes as a tf.function, for eager calls; kept outside
# the model, so that no save or export tracks it
_COMPILED_SAMPLERS = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class VQVAEConfig:
    codebook_size: int = option(64, "K, the number of code vectors")
    code_dim: int = option(16, "D, the size of each code vector")
    commitment: float = option(0.25, "beta, the weight of the commitment loss ||z_e - sg[e]||^2")
    codebook_update: str = option(
        "ema", "ema: each code vector moves to the moving average of the encoder outputs assigned to it "
        "(the paper's appendix); loss: the codebook descends ||sg[z_e] - e||^2", CODEBOOK_UPDATES
    )
    codebook_decay: float = option(0.99, "g, the decay of the EMA codebook statistics")
    vq_steps: int = option(
        560, "train steps of the VQ-VAE (encoder, codebook, decoder); every later step trains the PixelCNN "
        "prior on the codes of the frozen encoder (the default: 8 epochs of mnist5k's 4,500 train images in "
        "minibatches of 64)"
    )
    restart_threshold: float = option(
        1.0, "a code whose moving usage (assignments per step, decay codebook_decay) falls below this restarts at a "
        "random encoder output of the batch (Jukebox's restart of dead codes); 0: never"
    )
    prior_filters: int = option(64, "channels of the PixelCNN prior's stacks")
    prior_dropout: float = option(
        0.0, "dropout rate on the gated outputs of the PixelCNN prior in training (its 4,500 mnist5k grids are "
        "few: without it the prior's train NLL falls far below its test NLL)"
    )
    prior_layers: int = option(
        0, "gated layers of the PixelCNN prior (0: max(h, w) - 2, the fewest whose receptive field covers the "
        "h x w code grid: 5 for 28x28 images)"
    )


def nearest_codes(z, codebook):
    """k*(z) = argmin_k ||z - e_k||^2 = argmin_k (||e_k||^2 - 2 z . e_k) for
    each row of z [N, D], codebook [K, D] -> int32 [N]."""
    distances = tf.reduce_sum(tf.square(codebook), axis=1)[None, :] - 2.0 * tf.matmul(z, codebook, transpose_b=True)
    return tf.argmin(distances, axis=1, output_type=tf.int32)


def perplexity(counts):
    """exp(-sum_k p_k log p_k), p_k = counts_k / sum(counts): the effective
    number of codes in use."""
    p = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    return tf.exp(-tf.reduce_sum(tf.math.xlogy(p, p)))


def inverse_cdf_sample(logits, u):
    """The smallest k with sum_{l <= k} softmax(logits)_l > u, per row:
    logits [N, K], u [N] in (0, 1) -> int32 [N] (a draw from the categorical
    distribution when u ~ U(0, 1))."""
    cdf = tf.cumsum(tf.nn.softmax(tf.cast(logits, tf.float32)), axis=-1)
    # u scaled by the cdf's last entry, which rounding may leave below 1: k stays
    # below K, and a code of probability 0 is never drawn
    k = tf.reduce_sum(tf.cast(cdf <= u[:, None] * cdf[:, -1:], tf.int32), axis=-1)
    return tf.minimum(k, tf.shape(logits)[-1] - 1)


@keras.saving.register_keras_serializable(package="genzoo")
class VQVAE(base.MultiOptimizer, base.ZooModel):
    """VQ-VAE with a gated PixelCNN prior; see the module docstring.

    compile(vq_optimizer, prior_optimizer): Adam(2e-3) each by default.
    `steps` counts train steps; Keras's model.optimizer (vq_optimizer) counts
    only the first stage's, as prior_optimizer counts only the second's. A
    learning-rate schedule (train.run --lr_decay) runs over both stages.
    encode_codes(x) -> code indices [B, h, w]; decode_codes(codes) -> images
    in [0, 1] (served as `encode` and `decode`); reconstruct(x); generate(n or z) -> images of codes
    drawn from the prior, z ~ N(0, I) [n, h * w] (latent_dim = h * w)."""

    Config = VQVAEConfig
    tracked = ("loss", "reconstruction", "commitment", "perplexity", "prior_nll", "stage")
    signature_names = ("generate", "encode", "decode", "reconstruct")
    optimizer_names = ("vq_optimizer", "prior_optimizer")
    optimizer_alias = "vq_optimizer"
    # 8 epochs of the VQ-VAE (vq_steps), then 40 of the prior, at twice Adam's usual
    # rate (README, "what was tried").
    training_defaults = {"epochs": 48, "batch_size": 64, "learning_rate": 2e-3}

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if (c.codebook_size < 2 or c.code_dim < 1 or c.prior_filters < 1 or c.prior_layers < 0
                or not zoo_layers.valid_dropout_rate(c.prior_dropout)):
            raise ValueError("codebook_size must be >= 2, code_dim and prior_filters >= 1, prior_layers >= 0 and "
                             "prior_dropout 0 or in (0, 1) (at least 1/65536 from either end); got "
                             f"{c.codebook_size}, {c.code_dim}, {c.prior_filters}, {c.prior_layers}, {c.prior_dropout}")
        if c.commitment < 0 or c.restart_threshold < 0 or not 0.0 < c.codebook_decay < 1.0 or c.vq_steps < 0:
            raise ValueError(f"commitment, restart_threshold and vq_steps must be >= 0 and codebook_decay in (0, 1); "
                             f"got {c.commitment}, {c.restart_threshold}, {c.vq_steps}, {c.codebook_decay}")
        self.code_grid = nets.code_grid(self.image_shape)
        self.num_codes = c.codebook_size
        self.encoder = nets.grid_encoder(self.image_shape, c.code_dim)
        self.decoder = nets.grid_decoder(c.code_dim, self.image_shape)
        layers = c.prior_layers or max(1, max(self.code_grid) - 2)
        self.prior = nets.gated_pixelcnn(self.code_grid, c.codebook_size, c.prior_filters, layers,
                                         dropout=c.prior_dropout)
        # Train steps taken: the stages and the restarts' seeds count them (neither
        # optimizer's iterations do: each rests in the other's stage).
        self.steps = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                     aggregation="only_first_replica", name="steps")
        ema = c.codebook_update == "ema"
        # usage N_k, also the EMA update's cluster sizes
        self.cluster_size = self.add_weight(
            shape=(c.codebook_size,), initializer="ones", trainable=False, aggregation="mean", name="cluster_size",
            autocast=False,
        )
        self.codebook = self.add_weight(
            shape=(c.codebook_size, c.code_dim), initializer=keras.initializers.VarianceScaling(distribution="uniform"),
            trainable=not ema, aggregation="mean", name="codebook", autocast=False,  # float32 under mixed precision
        )
        if ema:
            self.code_sums = self.add_weight(
                shape=(c.codebook_size, c.code_dim), initializer="zeros", trainable=False, aggregation="mean",
                name="code_sums", autocast=False,
            )
            self.code_sums.assign(self.codebook)  # M = N e with N = 1
        self.built = True

    def latent_size(self):
        """h * w: one N(0, 1) draw per position of the code grid."""
        h, w = nets.code_grid(self.image_shape)
        return h * w

    # -- codes ----------------------------------------------------------------------
    def quantise(self, z_e):
        """(indices [B, h, w], z_q [B, h, w, D]) of encoder outputs z_e [B, h, w, D]."""
        z_e = tf.cast(z_e, tf.float32)
        codebook = tf.convert_to_tensor(self.codebook)
        indices = nearest_codes(tf.reshape(z_e, [-1, self.config.code_dim]), codebook)
        indices = tf.reshape(indices, tf.shape(z_e)[:-1])
        return indices, tf.gather(codebook, indices)

    # Named apart from the capabilities' encode(images) -> [B, J] and decode(z [B, J]):
    # VQ-VAE's codes are grids of indices (served as `encode` and `decode`).
    def encode_codes(self, images: base.TensorLike) -> tf.Tensor:
        """Code indices [B, h, w] of `images` in [0, 1]."""
        return self.quantise(self.encoder(tf.cast(images, tf.float32)))[0]

    def decode_codes(self, codes: base.TensorLike) -> tf.Tensor:
        """Images in [0, 1] (the Bernoulli means) of code indices [B, h, w]."""
        z_q = tf.gather(tf.convert_to_tensor(self.codebook), tf.cast(codes, tf.int32))
        return distributions.likelihood_mean(self.decoder(z_q))

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode_codes(self.encode_codes(images))

    def call(self, images, training=False):
        return self.reconstruct(images)

    def sample_codes(self, z):
        """Code grids [n, h, w] drawn from the prior, position by position in
        raster order, by inverse-CDF sampling with u = Phi(z), z [n, h * w].
        Called eagerly, it runs as one tf.function per model (h * w calls of
        the prior in a graph loop, not in Python)."""
        if tf.executing_eagerly():
            if self not in _COMPILED_SAMPLERS:
                _COMPILED_SAMPLERS[self] = tf.function(self._sample_codes, reduce_retracing=True)
            return _COMPILED_SAMPLERS[self](tf.cast(z, tf.float32))
        return self._sample_codes(z)

    def _sample_codes(self, z):
        z = tf.cast(z, tf.float32)
        u = 0.5 * tf.math.erfc(-z / math.sqrt(2.0))  # Phi(z)
        n = tf.shape(z)[0]
        h, w = self.code_grid
        positions = h * w

        def draw(p, codes):
            logits = tf.reshape(self.prior(codes, training=False), [n, positions, self.num_codes])
            k = inverse_cdf_sample(tf.gather(logits, p, axis=1), tf.gather(u, p, axis=1))
            flat = tf.reshape(codes, [n, positions]) + tf.one_hot(p, positions, dtype=tf.int32)[None, :] * k[:, None]
            return p + 1, tf.reshape(flat, [n, h, w])

        _, codes = tf.while_loop(lambda p, _: p < positions, draw, (tf.constant(0), tf.zeros([n, h, w], tf.int32)))
        return codes

    def generate(self, n_or_z, labels=None, seed=None) -> tf.Tensor:
        """Images in [0, 1] of code grids drawn from the prior (sample_codes)
        with z ~ N(0, I) [n, h * w] drawn now (n given) or as given."""
        return self.decode_codes(self.sample_codes(self.noise(n_or_z, seed)))

    # -- losses ---------------------------------------------------------------------
    def losses_of(self, images, training=False):
        """{loss, reconstruction, commitment} per example (the module
        docstring's L; loss includes the codebook term when the codebook is
        learnt by its loss), with z_e [B, h, w, D] and the indices [B, h, w]."""
        c = self.config
        z_e = tf.cast(self.encoder(images, training=training), tf.float32)
        indices, z_q = self.quantise(z_e)
        straight_through = z_e + tf.stop_gradient(z_q - z_e)
        reconstruction = distributions.bernoulli_nll(images, self.decoder(straight_through, training=training))
        commitment = tf.reduce_sum(tf.square(z_e - tf.stop_gradient(z_q)), axis=[1, 2, 3])
        loss = reconstruction + c.commitment * commitment
        if c.codebook_update == "loss":
            loss += tf.reduce_sum(tf.square(tf.stop_gradient(z_e) - z_q), axis=[1, 2, 3])
        terms = {"loss": loss, "reconstruction": reconstruction, "commitment": commitment}
        return terms, z_e, indices

    def prior_nll(self, indices, training=False):
        """-log p(c) = -sum_ij log p(c_ij | c_<ij) per code grid [B, h, w]."""
        logits = tf.cast(self.prior(indices, training=training), tf.float32)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=indices, logits=logits), axis=[1, 2])

    def code_statistics(self, z_e, indices):
        """(n_k [K], m_k [K, D]) of the global batch: all-reduced sums of this
        replica's assignments and encoder outputs."""
        assigned = tf.one_hot(tf.reshape(indices, [-1]), self.num_codes)
        flat = tf.reshape(z_e, [-1, self.config.code_dim])
        return base.all_reduced_sum(tf.reduce_sum(assigned, axis=0)), base.all_reduced_sum(
            tf.matmul(assigned, flat, transpose_a=True)
        )

    def _update_codebook(self, counts, sums, z_e, condition):
        """Where `condition` holds: the usage N_k <- g N_k + (1 - g) n_k, the
        EMA update of the codebook (codebook_update="ema", module docstring),
        then the restart of dead codes (`restart_codes`)."""
        g = self.config.codebook_decay
        size = g * self.cluster_size + (1.0 - g) * counts
        codebook = tf.convert_to_tensor(self.codebook)
        updates = {"cluster_size": size}
        if self.config.codebook_update == "ema":
            code_sums = g * self.code_sums + (1.0 - g) * sums
            total = tf.reduce_sum(size)
            smoothed = (size + LAPLACE_EPSILON) / (total + self.num_codes * LAPLACE_EPSILON) * total
            codebook = code_sums / smoothed[:, None]
            updates["code_sums"] = code_sums
        if self.config.restart_threshold > 0:
            dead, restarts = self.restart_codes(size, z_e)
            updates["cluster_size"] = tf.where(dead, 1.0, size)
            codebook = tf.where(dead[:, None], restarts, codebook)
            if self.config.codebook_update == "ema":  # M_k = N_k e_k with N_k = 1
                updates["code_sums"] = tf.where(dead[:, None], restarts, updates["code_sums"])
        updates["codebook"] = codebook
        for name, value in updates.items():
            variable = getattr(self, name)
            variable.assign(tf.where(condition, value, variable))

    def restart_codes(self, size, z_e):
        """(dead [K], restarts [K, D]): the dead codes, whose usage N_k fell
        below restart_threshold, restart at encoder outputs of the global batch
        drawn at random, with N_k = 1 (Dhariwal et al. 2020, Jukebox): no code
        stays out of reach of the data. Every replica gathers the global batch
        and makes the same draw."""
        ctx = tf.distribute.get_replica_context()
        flat = tf.reshape(z_e, [-1, self.config.code_dim])
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            flat = ctx.all_gather(flat, axis=0)
        seed = base.step_seed(self.seed, self.steps, _RESTART)
        rows = tf.random.stateless_uniform([self.num_codes], seed, 0, tf.shape(flat)[0], dtype=tf.int32)
        return size < self.config.restart_threshold, tf.gather(flat, rows)

    # -- the train step -------------------------------------------------------------
    def training_vq(self):
        """Whether this step trains the VQ-VAE (the first vq_steps) or the prior."""
        return self.steps < self.config.vq_steps

    def train_step(self, data):
        images, _ = base.unpack(data)
        variables = self.optimizer_variables()
        vq_variables, prior_variables = variables["vq_optimizer"], variables["prior_optimizer"]
        stage_one = self.training_vq()
        with tf.GradientTape() as tape:
            terms, z_e, indices = self.losses_of(images, training=True)
            vq_loss = self.vq_optimizer.scale_loss(base.global_mean(terms["loss"]))

        # Only the stage's backward pass (and the prior's forward pass) runs; both
        # updates are made outside the conditionals (all-reduces cannot sit
        # inside one) and the idle one's undone. Gradients leave the branches
        # dense (the embedding's are IndexedSlices).
        def vq_gradients():
            return [tf.convert_to_tensor(g) for g in tape.gradient(vq_loss, vq_variables)]

        def prior_step():
            with tf.GradientTape() as prior_tape:
                nll = self.prior_nll(tf.stop_gradient(indices), training=True)
                loss = self.prior_optimizer.scale_loss(base.global_mean(nll))
            return [tf.convert_to_tensor(g) for g in prior_tape.gradient(loss, prior_variables)], nll

        def zeros(variables):
            return [tf.zeros_like(v) for v in variables]

        vq_grads = tf.cond(stage_one, vq_gradients, lambda: zeros(vq_variables))
        prior_grads, prior_nll = tf.cond(
            stage_one, lambda: (zeros(prior_variables), tf.zeros_like(terms["loss"])), prior_step
        )
        base.apply_if(self.vq_optimizer, vq_grads, vq_variables, stage_one)
        base.apply_if(self.prior_optimizer, prior_grads, prior_variables, tf.logical_not(stage_one))
        counts, sums = self.code_statistics(z_e, indices)
        self._update_codebook(counts, sums, z_e, stage_one)
        self.steps.assign_add(1)
        return self._track(terms, counts, prior_nll, stage_two=tf.logical_not(stage_one))

    def _track(self, terms, counts, prior_nll, stage_two):
        # prior_nll: the mean over the examples of stage-two steps (0 while none has run)
        weights = tf.fill(tf.shape(prior_nll), tf.cast(stage_two, tf.float32))
        self._trackers["prior_nll"].update_state(prior_nll, sample_weight=weights)
        return self.track(**terms, perplexity=perplexity(counts), stage=1.0 + tf.cast(stage_two, tf.float32))

    def test_step(self, data):
        images, _ = base.unpack(data)
        terms, z_e, indices = self.losses_of(images)
        counts, _ = self.code_statistics(z_e, indices)
        return self._track(terms, counts, self.prior_nll(indices), stage_two=tf.logical_not(self.training_vq()))

    def train_steps_taken(self):
        return self.steps

    # -- optimizers -----------------------------------------------------------------
    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        vq = self.encoder.trainable_variables + self.decoder.trainable_variables
        if self.config.codebook_update == "loss":
            vq = vq + [self.codebook]
        return {"vq_optimizer": vq, "prior_optimizer": self.prior.trainable_variables}

    def compile_defaults(self, learning_rate=None):
        """Adam(learning_rate or 2e-3) for each stage."""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        return {name: keras.optimizers.Adam(lr) for name in self.optimizer_names}

    # -- serving --------------------------------------------------------------------
    def _serve_encode(self):
        return (lambda images: {"codes": self.encode_codes(images)}), ("images",)

    def _serve_decode(self):
        return (lambda codes: {"images": self.decode_codes(codes)}), ("codes",)
