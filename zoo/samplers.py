"""Latent samplers of the models with an encoder (AE, VAE, CVAE, AAE, BiGAN).

A model's prior is often a poor description of where its codes actually lie
(the "holes" of a VAE's aggregate posterior, an AE that has no prior at all).
`CodeSampler` lets such a model generate from a distribution fitted to the
codes of its training images instead:

- prior:    the model's own p(z) (`prior_codes`; for the AE, its moving-average
            Gaussian of codes);
- gaussian: one full-covariance Gaussian N(m, L L^T), fitted by maximum likelihood;
- gmm:      sum_k pi_k N(mu_k, L_k L_k^T), `sampler_components` full-covariance
            Gaussians fitted by EM (sklearn.mixture.GaussianMixture, fixed random_state).

Serving contract: `generate` takes z ~ N(0, I) [B, J] and maps it
deterministically to a sample of the sampler (gaussian_transform,
mixture_transform), so the exported `generate` signature keeps its input and
the fitted parameters are baked into the SavedModel as variables.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from zoo.base import TensorLike, option, unpack

SAMPLERS = ("prior", "gaussian", "gmm")
JITTER = 1e-6  # added to a fitted covariance's diagonal so its Cholesky factor exists
U_CLIP = 1e-6  # keeps the re-used uniform inside (0, 1), where Phi^-1 is finite


def with_sampler_options(config_class=None, *, sampler="prior", components=10):
    """Class decorator of a model's Config dataclass: the same options followed
    by `sampler` (default `sampler`) and `sampler_components` (default
    `components`; after the model's own, so listings start with the options
    that matter most). Use bare, or as with_sampler_options(sampler="gmm",
    components=40) to change the defaults."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not valid; choose one of: {', '.join(SAMPLERS)}")

    def decorate(config_class):
        fields = [
            ("sampler", str, sampler_option(sampler)),
            ("sampler_components", int, option(components, "number of Gaussians of the gmm sampler")),
        ]
        extended = dataclasses.make_dataclass(config_class.__name__, fields, bases=(config_class,))
        extended.__module__, extended.__qualname__ = config_class.__module__, config_class.__qualname__
        extended.__doc__ = config_class.__doc__
        return extended

    return decorate(config_class) if config_class is not None else decorate


def sampler_option(default):
    """The `sampler` field of a Config, with default `default` (a subclass of
    a decorated Config redeclares `sampler: str = sampler_option(...)` to
    change it)."""
    return option(
        default,
        "distribution of the codes generate() decodes: the model's prior, or a gaussian / "
        "gmm fitted to the training codes after training",
        SAMPLERS,
    )


def gaussian_transform(eps, mean, scale_tril):
    """z = m + L eps: a sample of N(m, L L^T) for eps ~ N(0, I) [B, J]."""
    return mean + tf.linalg.matvec(scale_tril, eps)


def mixture_transform(eps, weights, means, scale_trils, groups=None):
    """Maps eps ~ N(0, I) [B, J] deterministically to a sample of the mixture
    sum_k pi_k N(mu_k, L_k L_k^T)  (weights [K], means [K, J], scale_trils [K, J, J]).

    The first coordinate picks the component and is then reused:
        u = Phi(eps_0) ~ U(0, 1),   k = the k with c_{k-1} <= u < c_k,  c_k = pi_1 + ... + pi_k,
    so P(k) = pi_k; given k, u' = (u - c_{k-1}) / pi_k is again U(0, 1) and
    independent of k, hence
        eps' = (Phi^-1(u'), eps_1, ..., eps_{J-1}) ~ N(0, I),   z = mu_k + L_k eps'
    is exactly a mixture sample. u' is clipped to [1e-6, 1 - 1e-6] (Phi^-1 is
    infinite at 0 and 1); u runs in float64 so the rescaling by 1/pi_k keeps
    the resolution of eps_0.

    With `groups` [B] (ints in [0, C)), one mixture per group: weights [C, K],
    means [C, K, J], scale_trils [C, K, J, J], and row b samples mixture groups[b]."""
    eps = tf.cast(eps, tf.float32)
    weights = tf.cast(tf.convert_to_tensor(weights), tf.float64)
    means = tf.cast(means, tf.float32)
    scale_trils = tf.cast(scale_trils, tf.float32)
    if groups is not None:
        # Row b's mixture; its components then indexed in the flattened [C * K] axis.
        groups = tf.cast(groups, tf.int32)
        num_components = tf.shape(weights)[1]
        weights = tf.gather(weights, groups)  # [B, K]
        offset = groups * num_components
        means = tf.reshape(means, tf.concat([[-1], tf.shape(means)[2:]], 0))
        scale_trils = tf.reshape(scale_trils, tf.concat([[-1], tf.shape(scale_trils)[2:]], 0))
    else:
        weights = weights[None]  # [1, K]: one mixture for every row
        num_components, offset = tf.shape(weights)[1], 0
    upper = tf.cumsum(weights, axis=1)  # c_k
    lower = upper - weights  # c_{k-1}
    u = 0.5 * tf.math.erfc(-tf.cast(eps[:, 0], tf.float64) / np.sqrt(2.0))  # Phi, exact in the lower tail
    k = tf.reduce_sum(tf.cast(u[:, None] >= upper, tf.int32), axis=1)
    k = tf.minimum(k, num_components - 1)  # u above a rounded c_K < 1
    row = tf.minimum(tf.range(tf.shape(eps)[0]), tf.shape(weights)[0] - 1)[:, None]
    at_k = tf.concat([row, k[:, None]], axis=1)
    pi_k = tf.maximum(tf.gather_nd(weights, at_k), 1e-300)
    u_new = tf.clip_by_value((u - tf.gather_nd(lower, at_k)) / pi_k, U_CLIP, 1.0 - U_CLIP)
    first = tf.cast(tf.math.ndtri(u_new), tf.float32)
    eps = tf.concat([first[:, None], eps[:, 1:]], axis=1)
    return gaussian_transform(eps, tf.gather(means, offset + k), tf.gather(scale_trils, offset + k))


def fit_gaussian(codes):
    """(mean [J], L [J, J]): the maximum-likelihood Gaussian of codes [N, J],
    m = 1/N sum z_i, L L^T = 1/N sum (z_i - m)(z_i - m)^T + 1e-6 I."""
    codes = np.asarray(codes, np.float64)
    mean = codes.mean(axis=0)
    cov = np.cov(codes, rowvar=False, bias=True).reshape(codes.shape[1], codes.shape[1])
    return mean, np.linalg.cholesky(cov + JITTER * np.eye(codes.shape[1]))


def fit_gmm(codes, components, seed=0):
    """(weights [K], means [K, J], Cholesky factors [K, J, J]) of a K-component
    full-covariance Gaussian mixture fitted to codes [N, J] by EM (k-means
    initialisation, fixed random_state, so a refit gives the same mixture)."""
    from sklearn.mixture import GaussianMixture  # only fitting needs scikit-learn

    codes = np.asarray(codes, np.float64)
    if len(codes) < components:
        raise ValueError(f"fitting {components} components needs at least {components} codes, got {len(codes)}")
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    gmm = GaussianMixture(components, covariance_type="full", reg_covar=JITTER, random_state=seed)
    # One BLAS thread: EM's matrices are small (J x J), and more threads only
    # contend, with each other and with TF's: 2.4 s against 6.2 s for 40
    # components on 4,500 codes of 32 numbers alone, 20-50 s beside a training.
    with threadpool_limits(1):
        gmm.fit(codes)
    return gmm.weights_, gmm.means_, np.linalg.cholesky(gmm.covariances_)


def refitted(model, images, labels=None, components=None, seed=None):
    """A copy of `model` (a CodeSampler) whose samplers are refitted to the
    codes of `images` with `components` Gaussians in the gmm (default: the
    model's) and EM seeded by `seed` (default: the model's); every other
    weight as in `model`. To choose sampler_components without retraining."""
    options = model.get_config()
    if components is not None:
        options["sampler_components"] = int(components)
    if seed is not None:
        options["seed"] = int(seed)
    copy = type(model).from_config(options)
    if len(copy.weights) != len(model.weights):
        raise ValueError(f"cannot copy {model.name}'s weights: the copy has {len(copy.weights)}, not {len(model.weights)}")
    for target, source in zip(copy.weights, model.weights):
        if not target.name.startswith("gmm_"):  # the mixture's shapes depend on components; refitted below
            target.assign(source)
    copy.fit_sampler(images, labels)
    return copy


def _batched_eye(batch_shape, j):
    return lambda shape, dtype=None: tf.eye(j, batch_shape=list(batch_shape), dtype=dtype)


class CodeSampler:
    """Mixin of the models with an encoder: generate(n_or_z, labels, seed, sampler)
    decodes codes of the chosen sampler (see the module docstring).

    The model provides encode(images, labels), decode(z, labels) and
    prior_codes(eps, labels): its prior as a map of eps ~ N(0, I). Its Config
    is decorated with with_sampler_options. The fitted parameters are non-trainable
    weights (saved in .keras, checkpointed, exported); fit_sampler sets them.

    A model whose `sampler_classes` is C > 0 (a conditional model) fits its
    samplers per class: a Gaussian and a mixture to the codes of each label's
    images, and generate(labels=y) draws from class y's. Their weights carry a
    leading class axis of size C."""

    # 0: one fit to all the codes; C: one per class (labels in [0, C)).
    sampler_classes = 0
    capabilities = frozenset({"encoder", "decoder", "fitted_sampler"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        j, k = self.latent_dim, self.config.sampler_components
        if k < 1:
            raise ValueError(f"sampler_components must be >= 1, got {k}")
        c = (self.sampler_classes,) if self.sampler_classes else ()

        def weight(name, shape, initializer):
            return self.add_weight(shape=c + shape, initializer=initializer, trainable=False, name=name)

        self.sampler_fitted = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              name="sampler_fitted")  # 1 once fit_sampler has run
        self.gaussian_mean = weight("gaussian_mean", (j,), "zeros")
        self.gaussian_scale = weight("gaussian_scale", (j, j), _batched_eye(c, j))
        self.gmm_weights = weight("gmm_weights", (k,), keras.initializers.Constant(1.0 / k))
        self.gmm_means = weight("gmm_means", (k, j), "zeros")
        self.gmm_scales = weight("gmm_scales", (k, j, j), _batched_eye(c + (k,), j))

    def call(self, inputs, training=False):
        """images (or (images, labels)) -> reconstruct(images, labels)."""
        images, labels = unpack(inputs)
        return self.reconstruct(images, labels if self.conditional else None)

    def _serve_encode(self):
        """The `encode` serving signature: {"z": encode(images[, labels])}."""
        if self.conditional:
            return (lambda images, labels: {"z": self.encode(images, labels)}), ("images", "labels")
        return (lambda images: {"z": self.encode(images)}), ("images",)

    # -- fitting -----------------------------------------------------------------
    def encode_all(self, images, labels=None, batch_size=256):
        """encode(x) (the posterior mean where there is one) of all `images`
        [N, J], in batches, as numpy float64: the training codes that
        fit_sampler fits, or the test codes that train.evaluate and
        train.explore read."""
        codes = []
        for start in range(0, len(images), batch_size):
            batch_labels = labels[start : start + batch_size] if self.conditional else None
            codes.append(np.asarray(self.encode(images[start : start + batch_size], batch_labels)))
        return np.concatenate(codes).astype(np.float64)

    def fit_sampler(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
        """Fits the gaussian and the gmm sampler to the codes of `images` and
        marks the sampler fitted (train.run does this after training).

        Args:
          images: the training images [N, H, W, C] in [0, 1].
          labels: their labels [N]: needed by conditional encoders, and to fit
            per class where `sampler_classes` > 0.
          batch_size: images encoded at a time.

        Returns:
          The codes [N, J] (numpy float64) the samplers were fitted to.

        Raises:
          ValueError: too few codes (of a class) for sampler_components."""
        if self.sampler_classes and labels is None:
            raise ValueError(f"{type(self).__name__} fits its samplers per class: pass the training labels")
        codes = self.encode_all(images, self.require_labels(labels), batch_size)
        if self.sampler_classes:
            labels = np.asarray(labels).astype(np.int64).reshape(-1)
            fits = [self._fit_codes(codes[labels == c], f" of class {c}") for c in range(self.sampler_classes)]
            mean, scale, weights, means, scales = (np.stack(part) for part in zip(*fits))
        else:
            mean, scale, weights, means, scales = self._fit_codes(codes)
        for variable, value in (
            (self.gaussian_mean, mean),
            (self.gaussian_scale, scale),
            (self.gmm_weights, weights),
            (self.gmm_means, means),
            (self.gmm_scales, scales),
            (self.sampler_fitted, 1.0),
        ):
            variable.assign(np.asarray(value, np.float32))
        return codes

    def _fit_codes(self, codes, which=""):
        """(gaussian mean, scale, gmm weights, means, scales) of codes [N, J]."""
        try:
            weights, means, scales = fit_gmm(codes, self.config.sampler_components, seed=self.seed)
        except ValueError as e:
            raise ValueError(f"{e}{which}") from None
        return (*fit_gaussian(codes), weights, means, scales)

    def try_fit_sampler(self, images, labels=None):
        """fit_sampler, or, where the codes allow no fit (collapsed codes early in
        training: a singular covariance, EM failing), marks the sampler unfitted
        so that generate falls back to the prior instead of an older fit.
        Returns None, or the first line of the error."""
        try:
            self.fit_sampler(images, labels)
        except (ValueError, np.linalg.LinAlgError, tf.errors.InvalidArgumentError) as e:
            self.sampler_fitted.assign(0.0)
            return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return None

    def _require_fitted(self, sampler):
        """ValueError (eagerly; an assertion inside a tf.function) unless fit_sampler has run."""
        message = (
            f"sampler={sampler!r} draws from a distribution fitted to the training codes: "
            f"call model.fit_sampler(train_images) first (train.run does after training)"
        )
        if tf.executing_eagerly():
            if float(np.asarray(self.sampler_fitted)) <= 0:
                raise ValueError(message)
        else:
            tf.debugging.assert_positive(tf.convert_to_tensor(self.sampler_fitted), message=message)

    # -- sampling ------------------------------------------------------------------
    def fitted_codes(self, eps, sampler, labels=None):
        """Codes of the fitted `sampler` ("gaussian" or "gmm") from eps ~ N(0, I)
        (of class labels[b]'s fit in row b where the samplers are per class)."""
        groups = tf.cast(self.require_labels(labels), tf.int32) if self.sampler_classes else None
        if sampler == "gaussian":
            mean, scale = tf.convert_to_tensor(self.gaussian_mean), tf.convert_to_tensor(self.gaussian_scale)
            if groups is not None:
                mean, scale = tf.gather(mean, groups), tf.gather(scale, groups)
            return gaussian_transform(eps, mean, scale)
        return mixture_transform(eps, self.gmm_weights, self.gmm_means, self.gmm_scales, groups)

    def sample_codes(self, eps, labels=None, sampler=None):
        """Codes z [B, J] from eps ~ N(0, I) [B, J]: prior_codes for "prior",
        else the fitted transform. sampler=None takes config.sampler, and while
        fit_sampler has not run that default falls back to the prior (so the
        sample grids of a run in progress show p(z)); a sampler named
        explicitly must be fitted."""
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not valid; choose one of: {', '.join(SAMPLERS)}")
        eps = tf.cast(eps, tf.float32)
        if sampler is None and self.config.sampler != "prior":
            return tf.cond(
                tf.convert_to_tensor(self.sampler_fitted) > 0,
                lambda: self.fitted_codes(eps, self.config.sampler, labels),
                lambda: self.prior_codes(eps, labels),
            )
        if sampler is None or sampler == "prior":
            return self.prior_codes(eps, labels)
        self._require_fitted(sampler)
        return self.fitted_codes(eps, sampler, labels)

    def generate(
        self, n_or_z: int | TensorLike, labels: TensorLike | None = None, seed: int | None = None,
        sampler: str | None = None,
    ) -> tf.Tensor:
        """Images decoded from codes of `sampler`.

        Args:
          n_or_z: a count n (eps drawn now), or eps ~ N(0, I) [B, J] as given;
            eps is mapped deterministically to a code by sample_codes.
          labels: conditional models: [B] ints, or one int for every row.
          seed: the draw's seed when n_or_z is a count.
          sampler: prior, gaussian or gmm (default config.sampler).

        Returns:
          Images [B, H, W, C], float32 in [0, 1]."""
        eps = self.noise(n_or_z, seed)
        if self.conditional:
            labels = self.as_labels(self.require_labels(labels), tf.shape(eps)[0])
        return self.decode(self.sample_codes(eps, labels, sampler), labels)
