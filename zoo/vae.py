"""The variational autoencoder and its conditional twin.

Maximises the ELBO  E_q[log p(x|z)] - KL(q(z|x) || p(z))  with q(z|x) a tfp
Gaussian sampled by reparameterisation. The loss is the negative ELBO per
example, in nats.

posterior: diagonal  q(z|x) = N(mu, diag sigma^2)   (2J encoder outputs)
           banded    q(z|x) = N(mu, L L^T), L lower bidiagonal   (3J - 1 outputs)
           recurrent z_i = mu_i + a_i (z_{i-1} - mu_{i-1}) + s_i e_i, a tridiagonal
                     precision (3J - 1 outputs; distributions.recurrent_gaussian)
prior:     normal    p(z) = N(0, I), the KL analytic (tfd.kl_divergence)
           gmm       p(z) = sum_k pi_k N(mu_k, diag sigma_k^2), learned with the
                     networks; the KL is the single-sample Monte Carlo estimate
                     log q(z|x) - log p(z) at the z of the reconstruction term.
           recurrent p(z) a recurrent Gaussian as the posterior's, its mu, s and a
                     learned with the networks; the KL analytic (two Gaussians).
objective: elbo      the ELBO, its KL weighted by beta (beta-VAE), annealed (KL
                     warm-up), clamped (free bits) or pulled to a rising capacity C_t
           iwae      the importance-weighted bound of train_k draws (IWAE)
"""

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import base, distributions, ema, nets, samplers
from zoo.base import option

OBJECTIVES = ("elbo", "iwae")
_BINARIZE = 1  # random stream of a train step (0: the posterior's eps)
EVALUATION_BINARIZATION = (2016, 5)  # the seed of the fixed binarised images evaluation_images scores


# 40 Gaussians (the CVAE fits 5 per class) against 10, refitted to the codes
# of the default runs at bfe053c (three EM seeds each): FCD / floor ae 1.98
# against 2.75, vae 1.85 against 3.20, aae 2.20 against 2.67; a sample's distance to its nearest
# train image stays about a test image's (median 0.86-0.95 of it, 0.87-1.0
# with 10): no replay of training images (README, "what was tried").
@samplers.with_sampler_options(sampler="gmm", components=40)
@dataclasses.dataclass
class VAEConfig:
    # 32 against 16 with the 40-component sampler, the default run otherwise
    # (e3c880d): probe 0.948 against 0.932 (pixels 0.916), FCD 2.9x against
    # 2.2x the floor (README, "what was tried").
    latent_dim: int = option(32, "size of the latent code z")
    net: str = option("conv", "encoder/decoder architecture", nets.KINDS)
    likelihood: str = option(
        "bernoulli", "decoder likelihood p(x|z); on grey levels only continuous_bernoulli and gaussian are "
        "normalised densities (the bernoulli pmf is one on binary images: see binarize); discretized_logistic "
        "is a pmf over the 256 levels of 8-bit grey, scored in bits per dimension", distributions.LIKELIHOODS
    )
    binarize: str = option(
        "none", "dynamic: train on pixels resampled as Bernoulli(grey level) at every step, so that the "
        "bernoulli likelihood is a true pmf (the VAE and IWAE papers' protocol); none: the grey levels",
        distributions.BINARIZATIONS,
    )
    gaussian_scale: float = option(0.1, "std of the Gaussian likelihood (its start value if learned)")
    learn_scale: bool = option(False, "learn the Gaussian likelihood's std, one per channel")
    posterior: str = option(
        "diagonal", "q(z|x): diagonal covariance, banded (L L^T with L lower bidiagonal), or recurrent "
        "(z_i = mu_i + a_i (z_{i-1} - mu_{i-1}) + s_i e_i: a tridiagonal precision)",
        distributions.POSTERIORS,
    )
    prior: str = option(
        "normal", "p(z): N(0, I), a learned Gaussian mixture (gmm), or a learned recurrent Gaussian (recurrent, "
        "as the posterior of that name)", distributions.PRIORS,
    )
    prior_components: int = option(10, "number of Gaussians of the gmm prior")
    kl_warmup_steps: int = option(
        0, "train steps over which the KL weight rises linearly from 0 to 1 (KL annealing; 0: weight 1 throughout)"
    )
    free_bits: float = option(
        0.0, "nats of KL per latent dimension that cost nothing (free bits; 0: the plain ELBO)"
    )
    beta: float = option(
        1.0, "weight of the KL term (beta-VAE, Higgins et al. 2017: > 1 trades reconstruction for a code closer "
        "to the prior; 1: the ELBO); with capacity_max > 0, the gamma of gamma |KL - C_t|"
    )
    capacity_max: float = option(
        0.0, "controlled capacity (Burgess et al. 2018): the loss is -log p(x|z) + beta |KL - C_t|, the KL pulled "
        "to C_t nats per example, C_t rising linearly from 0 to capacity_max over capacity_steps (beta is the "
        "paper's gamma then: give a large one, e.g. 100); 0: off"
    )
    capacity_steps: int = option(0, "train steps over which C_t rises from 0 to capacity_max (0: C_t = capacity_max "
                                 "from the first step)")
    objective: str = option(
        "elbo", "training objective: elbo, or iwae, the importance-weighted bound log 1/K sum_k p(x, z_k) / q(z_k|x) "
        "of train_k draws z_k ~ q(z|x) (Burda et al. 2016)", OBJECTIVES,
    )
    train_k: int = option(5, "draws per example of objective=iwae (train.evaluate's --iwae_k is the evaluation's K)")
    ema_decay: float = option(0.0, ema.HELP)


def check_objective(c):
    """ValueError for options of a VAEConfig `c` that do not go together: beta,
    the capacity and the iwae objective's K out of range, the capacity with
    the KL's other schedules or a Monte Carlo KL, and objective=iwae with any
    of the ELBO's KL levers (it has no KL term to weight)."""
    if c.beta < 0 or c.capacity_max < 0 or c.capacity_steps < 0 or c.train_k < 1:
        raise ValueError(f"beta, capacity_max and capacity_steps must be >= 0 and train_k >= 1, got {c.beta!r}, "
                         f"{c.capacity_max!r}, {c.capacity_steps!r} and {c.train_k!r}")
    if c.capacity_max and (c.kl_warmup_steps or c.free_bits):
        raise ValueError("capacity_max sets the KL's target itself: use it without kl_warmup_steps and free_bits")
    if c.capacity_max and c.prior not in distributions.GAUSSIAN_PRIORS:
        # |KL - C| of a one-sample Monte Carlo KL is biased upwards (Jensen), as free bits' clamp
        raise ValueError("capacity_max needs an analytic KL (prior=normal or recurrent); use one or capacity_max=0")
    if c.objective == "iwae" and (c.beta != 1 or c.capacity_max or c.kl_warmup_steps or c.free_bits):
        raise ValueError("objective=iwae has no KL term to weight: use it with beta=1 and no capacity_max, "
                         "kl_warmup_steps or free_bits")


def beta_vae_loss(reconstruction, kl, beta):
    """-log p(x|z) + beta KL(q(z|x) || p(z)), per example (Higgins et al. 2017,
    "beta-VAE: Learning basic visual concepts with a constrained variational
    framework"): beta = 1 is the negative ELBO, beta > 1 presses the
    posterior to the prior (more disentangled, blurrier), beta < 1 the reverse.

    Args:
      reconstruction: -log p(x|z) per example [B] at z ~ q(z|x).
      kl: the KL term per example [B] (analytic, Monte Carlo, or after warm-up
        and free bits).
      beta: the KL's weight, >= 0.

    Returns:
      The loss per example [B]."""
    return reconstruction + beta * kl


def capacity_loss(reconstruction, kl, capacity, gamma):
    """-log p(x|z) + gamma |KL(q(z|x) || p(z)) - C|, per example (Burgess et al.
    2018, "Understanding disentangling in beta-VAE"): the KL is pulled to
    C nats, which training raises from 0 so that the code takes in information
    a little at a time. Per example as the paper writes it; implementations that
    pull the batch's mean KL to C instead let examples' KLs spread around it.

    Args:
      reconstruction: -log p(x|z) per example [B].
      kl: KL(q(z|x) || p(z)) per example [B] (analytic).
      capacity: C, the target KL in nats (a scalar).
      gamma: the weight of |KL - C| (the paper: 1000 on dSprites).

    Returns:
      The loss per example [B]."""
    return reconstruction + gamma * tf.abs(kl - capacity)


def iwae_loss(log_weights):
    """-log (1/K) sum_k w_k, per example (Burda et al. 2016, "Importance weighted
    autoencoders"), w_k = p(x, z_k) / q(z_k|x) at K draws z_k ~ q(z|x):
    the negative IWAE bound. Its reparameterised gradient is -sum_k w~_k grad
    log w_k with w~_k = w_k / sum_j w_j, each draw weighted by its normalised
    importance weight; K = 1 is the negative one-draw ELBO
    -log p(x|z) + log q(z|x) - log p(z).

    Args:
      log_weights: log w_k [K, B].

    Returns:
      The loss per example [B]."""
    return -distributions.log_mean_exp(log_weights)


@keras.saving.register_keras_serializable(package="genzoo")
class VAE(ema.Averaging, samplers.CodeSampler, base.ZooModel):
    """q(z|x) = N(mu(x), Sigma(x)) (diagonal, banded or recurrent), p(z) = N(0, I),
    a learned mixture or a learned recurrent Gaussian, p(x|z) Bernoulli,
    continuous Bernoulli, Gaussian or discretised logistic.

    loss = -ELBO = -log p(x|z) + KL(q(z|x) || p(z)),  z = mu + L eps (L = diag sigma
    for the diagonal posterior)."""

    Config = VAEConfig
    capabilities = frozenset({"likelihood"})  # and CodeSampler's and Averaging's
    # With ema_decay > 0 the inference methods (encode, decode, the bounds,
    # generate, the signatures) run the averages of encoder and decoder. The
    # learned prior (gmm, recurrent) and the Gaussian's learned scale are weights of the
    # model, not of a network: they are not averaged (inference reads them raw).
    ema_networks = ("encoder", "decoder")
    xla_pays_on_cpu_nets = base.AUTOENCODER_NETS_XLA_SPEEDS_UP
    # The epochs that fit 5 minutes of training on a 2-core CPU without
    # bfloat16 units, with XLA (README, "Quality from real runs"): 36 where
    # the plain step fitted 25.
    training_defaults = {"epochs": 36, "batch_size": 64, "learning_rate": 1e-3}
    legacy_options = {"sampler_components": 10}  # runs saved before the default was 40
    tracked = ("loss", "reconstruction", "kl")
    signature_names = ("generate", "encode", "decode", "reconstruct")

    def __init__(self, image_shape, num_classes=0, **kwargs):
        super().__init__(image_shape, num_classes, **kwargs)
        c = self.config
        if c.kl_warmup_steps < 0 or c.free_bits < 0:
            raise ValueError(
                f"kl_warmup_steps and free_bits must be >= 0, got {c.kl_warmup_steps!r} and {c.free_bits!r}"
            )
        if c.binarize == "dynamic" and c.likelihood != "bernoulli":
            raise ValueError(f"binarize=dynamic makes binary images, for likelihood=bernoulli; got likelihood={c.likelihood!r}")
        if c.free_bits and c.prior not in distributions.GAUSSIAN_PRIORS:
            # one-sample Monte Carlo KLs are noisy and can be negative: a per-example clamp would bias them
            raise ValueError("free_bits needs an analytic KL (prior=normal or recurrent); use one or free_bits=0")
        check_objective(c)
        cond = self.num_classes if self.conditional else 0
        out_dim = distributions.posterior_size(c.posterior, self.latent_dim)
        self.encoder = nets.encoder(c.net, self.image_shape, out_dim, cond_dim=cond)
        self.decoder = nets.decoder(c.net, self.latent_dim + cond, self.image_shape,
                                    distributions.OUTPUTS_PER_PIXEL.get(c.likelihood, 1))
        self.log_scale = self.add_weight(
            shape=(self.image_shape[-1],),
            initializer=keras.initializers.Constant(math.log(c.gaussian_scale)),
            trainable=c.learn_scale and c.likelihood == "gaussian",
            name="log_scale",
        )
        if c.prior == "gmm":
            self._add_mixture_prior(c.prior_components)
        if c.prior == "recurrent":
            self._add_recurrent_prior()
        self.build_ema()
        self.built = True

    def _add_mixture_prior(self, k):
        """Trainable weights of the gmm prior: logits 0 (pi_k = 1/K), means a
        fixed-seed N(0, 1) draw (so the components start apart), scales 1."""
        if k < 1:
            raise ValueError(f"prior_components must be >= 1, got {k}")
        j = self.latent_dim
        self.prior_logits = self.add_weight(shape=(k,), initializer="zeros", name="prior_logits")
        self.prior_means = self.add_weight(
            shape=(k, j), initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            name="prior_means",
        )
        self.prior_raw_scales = self.add_weight(
            shape=(k, j), initializer=keras.initializers.Constant(distributions.UNIT_RAW_SCALE), name="prior_raw_scales"
        )

    def _add_recurrent_prior(self):
        """Trainable weights of the recurrent prior, started at N(0, I): means 0,
        scales 1, coefficients a_2..a_J 0."""
        j = self.latent_dim
        self.prior_loc = self.add_weight(shape=(j,), initializer="zeros", name="prior_loc")
        self.prior_raw_scales = self.add_weight(
            shape=(j,), initializer=keras.initializers.Constant(distributions.UNIT_RAW_SCALE), name="prior_raw_scales"
        )
        self.prior_coefficients = self.add_weight(shape=(j - 1,), initializer="zeros", name="prior_coefficients")

    # -- the probabilistic model ---------------------------------------------
    def _with_labels(self, inputs, labels):
        inputs = tf.cast(inputs, tf.float32)
        if not self.conditional:
            return inputs
        return [inputs, self.one_hot(self.require_labels(labels))]

    def posterior(self, images, labels=None, averaged=False):
        """q(z|x) (q(z|x, y) for the CVAE): a tfd.MultivariateNormalDiag,
        MultivariateNormalTriL for the banded posterior, MultivariateNormalLinearOperator
        for the recurrent one; averaged: from the
        encoder's moving average (zoo.ema)."""
        inputs = self._with_labels(images, labels)
        params = self.averaged_call("encoder", inputs) if averaged else self.encoder(inputs)
        return distributions.posterior(self.config.posterior, params)

    def prior(self):
        """p(z): N(0, I), the learned mixture (distributions.mixture_prior) or the
        learned recurrent Gaussian (distributions.recurrent_gaussian)."""
        if self.config.prior == "normal":
            return distributions.standard_normal_prior(self.latent_dim)
        if self.config.prior == "recurrent":
            return distributions.recurrent_gaussian(self.prior_loc, self.prior_raw_scales, self.prior_coefficients)
        return distributions.mixture_prior(self.prior_logits, self.prior_means, self.prior_raw_scales)

    def prior_codes(self, eps, labels=None):
        """A sample of p(z) from eps ~ N(0, I): eps itself for N(0, I); mu + B^-1 S eps
        (the recursion) for the recurrent prior; for the gmm the exact transform
        samplers.mixture_transform."""
        if self.config.prior == "normal":
            return eps
        p = self.prior()
        if self.config.prior == "recurrent":
            return p.bijector.forward(eps)
        components = p.components_distribution
        return samplers.mixture_transform(
            eps, p.mixture_distribution.probs_parameter(), components.loc, components.scale.to_dense()
        )

    def kl(self, posterior, z):
        """KL(q(z|x) || p(z)) per example: analytic for the Gaussian priors N(0, I)
        and recurrent (distributions.kl_to_prior); for the gmm prior the single-sample
        Monte Carlo estimate log q(z|x) - log p(z) at z, the sample of the
        reconstruction term (distributions.monte_carlo_kl)."""
        if self.config.prior in distributions.GAUSSIAN_PRIORS:
            return distributions.kl_to_prior(posterior, self.prior())
        return distributions.monte_carlo_kl(posterior, self.prior(), z)

    def kl_weight(self, step):
        """w_t = min(1, (t + 1) / kl_warmup_steps) at train step t (0-based),
        1 without warm-up (Bowman et al. 2016, Sonderby et al. 2016)."""
        warmup = self.config.kl_warmup_steps
        if warmup <= 0:
            return tf.constant(1.0)
        return tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(warmup))

    def kl_objective(self, posterior, kl):
        """The KL term the optimiser sees, per example: with free bits lambda
        (Kingma et al. 2016, per example), sum_j max(lambda, KL_j) for the diagonal
        posterior against N(0, I), KL_j = 1/2 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2);
        max(lambda J, KL) for the banded and recurrent posteriors and the recurrent
        prior (free bits need an analytic KL). Without free bits, KL itself."""
        lam = self.config.free_bits
        if lam <= 0:
            return kl
        if self.config.posterior == "diagonal" and self.config.prior == "normal":
            return tf.reduce_sum(tf.maximum(lam, distributions.kl_per_dimension(posterior)), axis=-1)
        return tf.maximum(lam * self.latent_dim, kl)

    def capacity(self, step):
        """C_t = capacity_max min(1, t / capacity_steps) nats at train step t
        (0-based): 0 at the first step, capacity_max from step capacity_steps
        on (Burgess et al. 2018); capacity_max throughout when capacity_steps = 0."""
        c = self.config
        if c.capacity_steps <= 0:
            return tf.constant(float(c.capacity_max))
        return c.capacity_max * tf.minimum(1.0, tf.cast(step, tf.float32) / float(c.capacity_steps))

    def elbo_loss(self, posterior, reconstruction, kl, step):
        """The per-example loss of objective=elbo at train step t: with
        capacity_max > 0, capacity_loss(rec, KL, C_t, beta); otherwise
        beta_vae_loss(rec, w_t KL', beta), w_t the warm-up weight (kl_weight)
        and KL' the KL after free bits (kl_objective). beta = 1, no warm-up
        and no free bits: -ELBO = -log p(x|z) + KL."""
        if self.config.capacity_max > 0:
            return capacity_loss(reconstruction, kl, self.capacity(step), self.config.beta)
        return beta_vae_loss(reconstruction, self.kl_weight(step) * self.kl_objective(posterior, kl), self.config.beta)

    def _decoder_outputs(self, z, labels=None, averaged=False):
        if self.conditional:
            z = tf.concat([z, self.one_hot(self.require_labels(labels))], axis=-1)
        return self.averaged_call("decoder", z) if averaged else self.decoder(z)

    def likelihood(self, z, labels=None, averaged=False):
        """p(x|z) over whole images; averaged: from the decoder's moving average."""
        return distributions.likelihood(
            self.config.likelihood, self._decoder_outputs(z, labels, averaged), self.log_scale
        )

    def elbo_terms(self, images, labels=None, seed=None):
        """Per-example (-log p(x|z), KL(q(z|x) || p(z))) with z ~ q(z|x)
        reparameterised, from the networks inference uses (their averages when
        ema_decay > 0; training uses the raw networks)."""
        return self._elbo_parts(images, labels, seed, averaged=True)[1:]

    def posterior_sample(self, q, seed=None, k=None):
        """z ~ q(z|x) reparameterised: z = mu + L eps, eps this replica's slice of
        one N(0, I) draw for the global batch from `seed` (base.replica_normal),
        so that N replicas draw what one device draws; a fresh draw when seed is None.
        k: K draws per example, z [K, B, J]; eps is drawn [B, K, J], so K = 1
        draws the eps of k=None, z [B, J]."""
        if seed is None:
            return q.sample() if k is None else q.sample(k)
        batch = tf.shape(q.loc)[0]
        if k is None:
            return q.bijector.forward(base.replica_normal(batch, self.latent_dim, seed))
        eps = base.replica_slice(lambda n: tf.random.stateless_normal([n, k, self.latent_dim], seed), batch)
        return q.bijector.forward(tf.transpose(eps, [1, 0, 2]))

    def _elbo_parts(self, images, labels, seed, averaged=False):
        """(q(z|x), -log p(x|z), KL) per example at one reparameterised z ~ q(z|x)."""
        q = self.posterior(images, labels, averaged)
        z = self.posterior_sample(q, seed)
        reconstruction = -self.likelihood(z, labels, averaged).log_prob(images)
        return q, reconstruction, self.kl(q, z)

    def iwae_bound(self, images, labels=None, k=64, seed=None):
        """log p(x) estimated by importance sampling with K draws from q(z|x)
        (distributions.importance_weighted_bound), per example in nats; K = 1 is the ELBO."""
        images = tf.cast(images, tf.float32)
        q = self.posterior(images, labels, averaged=True)

        def log_joint(z):  # z [K, B, J] -> log p(x|z) + log p(z) [K, B]
            return self._log_likelihoods(images, labels, z, averaged=True) + self.prior().log_prob(z)

        return distributions.importance_weighted_bound(q, log_joint, k, seed=seed)

    def _log_likelihoods(self, images, labels, z, averaged=False):
        """log p(x|z_k) [K, B] of images [B, ...] at codes z [K, B, J], the K
        decodings in one batch."""
        k, batch = tf.shape(z)[0], tf.shape(images)[0]
        flat = tf.reshape(z, [-1, self.latent_dim])
        tiled = tf.tile(images, [k, 1, 1, 1])
        tiled_labels = tf.tile(labels, [k]) if self.conditional else None
        return tf.reshape(self.likelihood(flat, tiled_labels, averaged).log_prob(tiled), [k, batch])

    def iwae_parts(self, images, labels, seed, k):
        """(loss, -log p(x|z_1), KL) per example for objective=iwae, from the raw
        networks (training's): loss = iwae_loss(log w), log w_k = log p(x|z_k) +
        log p(z_k) - log q(z_k|x) at K reparameterised draws z_k ~ q(z|x)
        (posterior_sample); the two terms, at the first draw, are what is
        tracked beside it (KL as kl() gives it)."""
        q = self.posterior(images, labels)
        z = self.posterior_sample(q, seed, k=k)
        log_px = self._log_likelihoods(images, labels, z)
        log_w = log_px + self.prior().log_prob(z) - q.log_prob(z)
        return iwae_loss(log_w), -log_px[0], self.kl(q, z[0])

    # -- what its bounds are ------------------------------------------------
    @property
    def bound_kind(self) -> str:
        """What elbo_terms and iwae_bound bound on the images the model is scored
        on (evaluation_images): "binary", log p(x) of binarised images under the
        Bernoulli pmf (binarize=dynamic); "density", log p(x) under a normalised
        density of grey levels (continuous_bernoulli, gaussian); "discrete_8bit",
        log P(x) of the images quantised to 8-bit levels k / 255 under a pmf
        over the 256 levels (discretized_logistic); "unnormalised",
        the Bernoulli pmf applied to grey levels, which integrates to
        (2 p - 1) / ln(p / (1 - p)) <= 1/2 over [0, 1]: a training objective,
        not a log-likelihood."""
        c = self.config
        if c.binarize == "dynamic":
            return "binary"
        if c.likelihood in distributions.DISCRETE_8BIT:
            return "discrete_8bit"
        return "density" if c.likelihood in distributions.NORMALISED_ON_GREY_LEVELS else "unnormalised"

    def evaluation_images(self, images):
        """The images whose likelihood the model is scored on: with
        binarize=dynamic a fixed binarisation (seeded, the same for every run,
        as the papers' fixed binarised test split); for a pmf over 8-bit levels
        the images at their nearest level k / 255 (distributions.quantize: the
        log_prob reads a pixel so anyway, and this says which images were
        scored); otherwise the images."""
        images = tf.cast(images, tf.float32)
        if self.config.binarize == "dynamic":
            return distributions.binarize(images, tf.constant(EVALUATION_BINARIZATION, tf.int64))
        if self.config.likelihood in distributions.DISCRETE_8BIT:
            return distributions.quantize(images)
        return images

    # -- what the model can do -----------------------------------------------
    def encode(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.posterior(images, labels, averaged=True).mean()

    def decode(self, z: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return distributions.likelihood_mean(self._decoder_outputs(z, labels, averaged=True), self.config.likelihood)

    def reconstruct(self, images: base.TensorLike, labels: base.TensorLike | None = None) -> tf.Tensor:
        return self.decode(self.encode(images, labels), labels)

    # -- training --------------------------------------------------------------
    def _step_seed(self, stream=0):
        return base.step_seed(self.seed, self.optimizer.iterations, stream=stream)

    def training_images(self, images):
        """The images a step fits: binarize=dynamic resamples the pixels of
        every step (distributions.binarize); otherwise the images themselves."""
        if self.config.binarize == "dynamic":
            return distributions.binarize(images, self._step_seed(stream=_BINARIZE))
        return tf.cast(images, tf.float32)

    def objective_parts(self, images, labels, step):
        """(what the optimiser minimises, the tracked loss, -log p(x|z), KL) per
        example at train step `step`, from the raw networks: for objective=elbo
        elbo_loss, and the tracked loss the true -ELBO, rec + KL, whatever beta,
        warm-up, free bits or capacity; for objective=iwae the negative IWAE
        bound of train_k draws, both (iwae_parts)."""
        if self.config.objective == "iwae":
            loss, reconstruction, kl = self.iwae_parts(images, labels, self._step_seed(), self.config.train_k)
            return loss, loss, reconstruction, kl
        q, reconstruction, kl = self._elbo_parts(images, labels, self._step_seed())
        return self.elbo_loss(q, reconstruction, kl, step), reconstruction + kl, reconstruction, kl

    def train_step(self, data):
        images, labels = base.unpack(data)
        images = self.training_images(images)
        step = self.optimizer.iterations
        _, loss, reconstruction, kl = base.minimize(
            self.optimizer, self.trainable_variables, lambda: self.objective_parts(images, labels, step)
        )
        self.update_ema()
        return self.track(loss=loss, reconstruction=reconstruction, kl=kl)

    def test_step(self, data):
        images, labels = base.unpack(data)
        images = self.training_images(images)
        # the raw networks, as training
        _, loss, reconstruction, kl = self.objective_parts(images, labels, self.optimizer.iterations)
        return self.track(loss=loss, reconstruction=reconstruction, kl=kl)

    # -- serving ---------------------------------------------------------------
    def _serve_encode(self):
        def encode(images, labels=None):
            q = self.posterior(images, labels, averaged=True)
            return {"z": q.mean(), "z_stddev": q.stddev()}

        return (encode, ("images", "labels")) if self.conditional else (encode, ("images",))


@dataclasses.dataclass
class CVAEConfig(VAEConfig):
    # The encoder leaks the label into the code (a probe reads the digit from
    # it), so a prior draw decoded with label y can look like another digit.
    # Codes of class y's own fit do not: on mnist5k's default run, prior
    # samples gave FCD 24.3 and conditional accuracy 0.768, a gmm of 5
    # components per class 7.6 and 0.992 (README, "what was tried").
    latent_dim: int = option(16, "size of the latent code z")  # the VAE's 32 was measured without labels
    sampler: str = samplers.sampler_option("gmm")
    sampler_components: int = option(5, "number of Gaussians of the gmm sampler (per class if sampler_per_class)")
    sampler_per_class: bool = option(True, "fit the gaussian and gmm samplers to each class's codes; "
                                     "generate(labels=y) then draws class y's")


@keras.saving.register_keras_serializable(package="genzoo")
class CVAE(VAE):
    """The conditional VAE: q(z|x, y), p(x|z, y) with y one-hot, p(z) as the VAE's;
    loss = -log p(x|z, y) + KL(q(z|x, y) || p(z)). generate(n, labels=y) draws digit y.
    The fitted samplers are fitted per class (sampler_per_class): generate(labels=y)
    decodes codes drawn from the fit to class y's codes."""

    Config = CVAEConfig
    conditional = True
    # Runs saved before the per-class samplers sampled the prior with one fit to all codes.
    legacy_options = {"sampler": "prior", "sampler_components": 10, "sampler_per_class": False}

    @property
    def sampler_classes(self):
        return self.num_classes if self.config.sampler_per_class else 0
