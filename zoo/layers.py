"""Keras layers the nets share.

BatchNormalization is keras.layers.BatchNormalization computed by TensorFlow's
fused kernel (one FusedBatchNormV3 op forward and one gradient op backward)
instead of Keras 3's chain of elementwise ops: the same function, several
times cheaper on a CPU, most of all in bfloat16. Dropout is keras.layers.Dropout
with a mask from an integer hash, cheap with and without XLA (and, in
bfloat16, exact). Both keep Keras's class names,
so weights saved with Keras's layers (.keras files, checkpoints) load into them."""

import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="genzoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta over the last axis.

    Training: mean and var are the batch's (var biased, 1/n), and the moving
    statistics move by m <- momentum * m + (1 - momentum) * batch statistic, as
    in keras.layers.BatchNormalization. Inference uses the moving statistics.
    Statistics are computed in float32 whatever the compute dtype.

    The fused kernel computes the statistics of this replica's batch, so when
    `synchronized` is set and there are several replicas (MirroredStrategy,
    MultiWorkerMirroredStrategy), or with a mask or renorm, the layer falls back
    to Keras's implementation, which all-reduces them."""

    def _can_fuse(self, inputs, mask):
        if mask is not None or self.renorm or self.axis not in (-1, len(inputs.shape) - 1):
            return False
        if len(inputs.shape) not in (2, 4):
            return False
        if self.synchronized:
            ctx = tf.distribute.get_replica_context()
            if ctx is not None and ctx.num_replicas_in_sync > 1:
                return False
        return True

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]  # [B, C] -> [B, 1, 1, C]
        x = tf.cast(x, self.compute_dtype)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, unbiased_var = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            # The kernel returns var * n / (n - 1); Keras moves the biased var.
            n = tf.cast(tf.size(x) // channels, tf.float32)
            var = unbiased_var * tf.math.divide_no_nan(n - 1.0, n)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + var * (1.0 - self.momentum)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.reshape(y, shape)


def _mix32(x):
    """Chris Wellons's "lowbias32" integer hash, a bijection on uint32:
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def valid_dropout_rate(rate):
    """Whether `rate` is 0 (no dropout) or a rate keep_mask can draw (its
    16-bit threshold round(65536 rate) strictly between 0 and 65536)."""
    return rate == 0 or (0 < rate < 1 and 0 < int(round(rate * 65536)) < 65536)


def keep_mask(shape, rate, seed):
    """A Bernoulli(1 - p) keep mask of `shape` (bool) and its scale 1 / (1 - p),
    p = round(65536 * rate) / 65536 (within 8e-6 of rate).

    Counter-based: word i of the mask is h_i = mix(mix(i ^ k0) + k1), with mix
    the lowbias32 hash and the keys k0 = mix(s0 ^ 0x9e3779b9), k1 = mix(s1 + k0)
    from the two seed words. Each word's two 16-bit halves, read as int16 v
    uniform on -32768..32767, give two units, kept where v >= 65536 p - 32768,
    so P(keep) = 1 - p. Why not tf.random: a hash is plain integer arithmetic,
    which XLA fuses into the layer, while XLA's random-bit generator on a CPU
    made dropout 4-7x dearer than without XLA (3-6x cheaper this way); without
    XLA it costs about what a Philox draw of 16 bits per unit does. The second
    round keeps masks of different seeds from being shifted copies of each
    other, as one round of mix(i + key) would make them."""
    if rate == 0 or not valid_dropout_rate(rate):
        raise ValueError(f"dropout rate must be in (0, 1), got {rate!r}")
    threshold = int(round(rate * 65536))
    shape = list(shape)  # ints, or scalar tensors for dynamic sizes
    n = tf.reduce_prod(shape)
    s = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
    k0 = _mix32(tf.bitwise.bitwise_xor(s[0], tf.constant(0x9E3779B9, tf.uint32)))
    k1 = _mix32(s[1] + k0)
    counter = tf.bitcast(tf.range((n + 1) // 2, dtype=tf.int32), tf.uint32)
    words = _mix32(_mix32(tf.bitwise.bitwise_xor(counter, k0)) + k1)
    halves = tf.reshape(tf.reshape(tf.bitcast(words, tf.int16), [-1])[:n], shape)
    return halves >= threshold - 32768, 65536.0 / (65536 - threshold)


@keras.saving.register_keras_serializable(package="genzoo")
class Dropout(keras.layers.Dropout):
    """keras.layers.Dropout with the mask of `keep_mask`: in training,
    y = x * m / (1 - p) with m ~ Bernoulli(1 - p) per unit (E[y] = x), read
    from 16-bit hashed integers; identity in inference. Seeds come from the
    layer's SeedGenerator as in Keras, so checkpoints carry the stream."""

    def call(self, inputs, training=False):
        if not training or self.rate == 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        static = inputs.shape
        shape = [static[i] if static[i] is not None else tf.shape(inputs)[i] for i in range(len(static))]
        keep, scale = keep_mask(shape, self.rate, seed)
        return inputs * tf.where(keep, tf.constant(scale, inputs.dtype), tf.constant(0, inputs.dtype))


@keras.saving.register_keras_serializable(package="genzoo")
class SpectralNormalization(keras.layers.Wrapper):
    """Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for
    Generative Adversarial Networks"): the wrapped layer (Dense, Conv2D: any
    layer linear in its `kernel`) computes with W_SN = W / sigma(W), sigma(W)
    the largest singular value of its kernel W reshaped to [-1, out].

    sigma is estimated by power iteration on a unit vector u [out], a
    non-trainable weight of the layer. Every call in training mode makes one
    iteration and stores the new u,

        v = W u / ||W u||,   u <- W^T v / ||W^T v||,

    and sigma = ||W u|| with u held constant (stop_gradient), so the gradient
    of W / sigma(W) includes sigma's, v u^T (Algorithm 1 of the paper).
    Inference reads u without updating it. The kernel variable itself is never
    modified: the layer runs on W / sigma through a keras.StatelessScope.
    (keras.layers.SpectralNormalization instead overwrites the trainable kernel
    with W / sigma at every training call: any training-mode call, a generator
    step's too, changes D's weights, and no gradient passes through sigma.)

    The iteration runs in float32 whatever the dtype policy. u is aggregated
    "only_first_replica": under tf.distribute every replica computes the same
    u from the same W and u, and its assignment in replica context keeps
    replica 0's."""

    def __init__(self, layer, power_iterations=1, **kwargs):
        if int(power_iterations) < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations!r}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        kwargs["autocast"] = False  # read the kernel in float32; the wrapped layer casts
        super().__init__(layer, **kwargs)
        self.power_iterations = int(power_iterations)

    def build(self, input_shape):
        super().build(input_shape)
        if not hasattr(self.layer, "kernel"):
            raise ValueError(f"{type(self.layer).__name__} has no kernel to normalise")
        self.vector_u = self.add_weight(
            shape=(self.layer.kernel.shape[-1],),
            initializer=keras.initializers.RandomNormal(),
            trainable=False,
            name="vector_u",
            dtype="float32",
            aggregation="only_first_replica",
        )

    def _matrix(self):
        kernel = self.layer.kernel
        return tf.reshape(tf.cast(kernel.value, tf.float32), [-1, kernel.shape[-1]])

    @staticmethod
    def _iterate(w, u):
        v = tf.math.l2_normalize(tf.linalg.matvec(w, u))
        return tf.math.l2_normalize(tf.linalg.matvec(w, v, transpose_a=True))

    def _u(self):
        """The power iteration's vector, as a unit vector (its random start is not)."""
        return tf.math.l2_normalize(tf.cast(self.vector_u.value, tf.float32))

    def sigma(self):
        """The current estimate ||W u|| of the kernel's largest singular value."""
        return tf.norm(tf.linalg.matvec(self._matrix(), self._u()))

    def call(self, inputs, training=False):
        w = self._matrix()
        u = self._u()
        if training:
            for _ in range(self.power_iterations):
                u = self._iterate(w, u)
            u = tf.stop_gradient(u)
            self.vector_u.assign(u)
        sigma = tf.norm(tf.linalg.matvec(w, u))
        kernel = self.layer.kernel
        normalized = tf.reshape(w / sigma, kernel.shape)
        # The layer's other weights by value too: inside an outer StatelessScope
        # (stateless_call) v.value is that scope's value, which a nested scope would not see.
        others = [(v, v.value) for v in self.layer.variables if v is not kernel]
        with keras.StatelessScope(state_mapping=others + [(kernel, normalized)]):
            return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        return {**config, "power_iterations": self.power_iterations}


MASKS = ("vertical", "horizontal")


@keras.saving.register_keras_serializable(package="genzoo")
class MaskedConv2D(keras.layers.Conv2D):
    """A 'same'-sized k x k convolution (k odd, centre c = k // 2) restricted to
    the taps of a causal mask, the convolutions of the gated PixelCNN (van den
    Oord et al. 2016, "Conditional image generation with PixelCNN decoders").
    For the output at (i, j) it reads

        vertical:   the rows above, i - c .. i - 1 (and row i when include_centre),
                    columns j - c .. j + c;
        horizontal: row i, columns j - c .. j - 1 (and column j when include_centre).

    Without the centre (the first layer, mask 'A') an output never reads the
    input at its own position; with it (mask 'B', later layers) it reads the
    previous layer's output there, which itself saw only earlier positions.

    It equals a k x k convolution whose kernel is multiplied by causal_mask(k,
    mask, include_centre), but holds only the kept taps (a (c + 1) x k or
    1 x (c + 1) kernel with the centre, c x k or 1 x c without) and pads the
    input above and to the left instead of around it: the masked kernel's
    zeros cost no multiplications (the first 5 x 5 layer keeps 12 of its 50
    taps, about a quarter)."""

    def __init__(self, filters, kernel_size, mask="vertical", include_centre=False, **kwargs):
        if mask not in MASKS:
            raise ValueError(f"mask={mask!r} is not valid; choose one of: {', '.join(MASKS)}")
        k = kernel_size
        if not isinstance(k, numbers.Integral):
            k = tuple(k)
            if len(k) != 2 or k[0] != k[1]:
                raise ValueError(f"a masked convolution needs an odd square kernel, got {kernel_size}")
            k = k[0]
        k = int(k)
        if k < 1 or k % 2 == 0 or (k == 1 and not include_centre):
            raise ValueError(f"a masked convolution needs an odd kernel size (3 or more without the centre), got {k}")
        # the padding below assumes unit strides and dilation over channels-last images
        for arg, default in (("strides", 1), ("dilation_rate", 1), ("data_format", "channels_last")):
            if kwargs.get(arg, default) not in (default, (default, default)):
                raise ValueError(f"a masked convolution takes only {arg}={default!r}, got {kwargs[arg]!r}")
        kwargs["data_format"] = "channels_last"
        c, centre = k // 2, int(bool(include_centre))
        taps = (c + centre, k) if mask == "vertical" else (1, c + centre)
        kwargs.pop("padding", None)
        super().__init__(filters, taps, padding="valid", **kwargs)
        self.size = k
        self.mask = mask
        self.include_centre = bool(include_centre)
        # zeros above and to the left put output (i, j) over the kept taps; without the
        # centre the padded input gives one row (vertical) or column (horizontal) too many
        self._pads = [[0, 0], [c, 0], [c, c], [0, 0]] if mask == "vertical" else [[0, 0], [0, 0], [c, 0], [0, 0]]

    def convolution_op(self, inputs, kernel):
        out = super().convolution_op(tf.pad(inputs, self._pads), kernel)
        return out[:, : tf.shape(inputs)[1], : tf.shape(inputs)[2], :]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def load_own_variables(self, store):
        """Loads the layer's kernel from a .keras file; a k x k kernel saved
        before the layer kept only its taps (the masked ones multiplied by
        zero) loads its kept taps. (A whole VQ-VAE of then loads only with
        keras.models.load_model(path, compile=False): its optimizer's moments
        have the old shapes.)"""
        kernel = store["0"]
        if tuple(kernel.shape[:2]) == (self.size, self.size) != tuple(self.kernel.shape[:2]):
            c, centre = self.size // 2, int(self.include_centre)
            kernel = kernel[: c + centre] if self.mask == "vertical" else kernel[c : c + 1, : c + centre]
            store = {**{key: store[key] for key in store.keys()}, "0": kernel}
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.pop("padding", None)
        return {**config, "kernel_size": self.size, "mask": self.mask, "include_centre": self.include_centre}


def causal_mask(k, mask, include_centre):
    """The k x k 0/1 kernel mask of MaskedConv2D (a nested list, rows first)."""
    c = k // 2
    rows = []
    for r in range(k):
        if mask == "vertical":
            rows.append([1.0 if r < c or (include_centre and r == c) else 0.0] * k)
        else:
            rows.append([1.0 if r == c and (q < c or (include_centre and q == c)) else 0.0 for q in range(k)])
    return rows


@keras.saving.register_keras_serializable(package="genzoo")
class Gate(keras.layers.Layer):
    """The gated activation of the gated PixelCNN: tanh(a) * sigmoid(b), with a
    and b the first and second halves of the input's channels."""

    def call(self, x):
        a, b = keras.ops.split(x, 2, axis=-1)
        return keras.ops.tanh(a) * keras.ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)
