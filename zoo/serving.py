"""The serving signatures every model exports: typed tf.functions whose graphs
check their inputs, so that a server answers bad input with INVALID_ARGUMENT
(naming the input and what it expected) instead of a wrong answer or a crash,
and the signatures that draw the noise on the server (`sample`, `sample_png`).

The checks are graph ops that run at request time. They read shapes through
raw Shape/Rank ops, which Python never folds into constants from the declared
TensorSpec: TF Serving feeds tensors without comparing them to the signature's
shapes, so the declared shape says nothing about what arrives."""

import inspect

import tensorflow as tf

# The int inputs that hold indices: input -> (what one index names, the model
# attribute that bounds them). Their graph checks and the example requests of
# exports (warmup, verification) read the bound from here.
INDEX_INPUTS = {"labels": ("class", "num_classes"), "codes": ("code", "num_codes")}
MAX_SAMPLES = 1024  # `sample`: more images per request is a client's loop, not one graph call
IMAGE_TOLERANCE = 1e-3  # images may stray this far outside [0, 1] (rounding of clients' conversions)


def spec(model, name):
    """The typed TensorSpec of a serving input (batch dimension None)."""
    if name == "z":
        return tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    if name == "images":
        return tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
    if name == "labels":
        return tf.TensorSpec([None], tf.int32, name="labels")
    if name == "codes":  # a grid of code indices (VQ-VAE)
        return tf.TensorSpec([None, *model.code_grid], tf.int32, name="codes")
    if name in ("num_samples", "seed"):
        # A scalar, declared of unknown shape: TF Serving's REST row format sends
        # it as [1], and a declared [] would let graph optimisers assume it.
        return tf.TensorSpec(None, tf.int32, name=name)
    raise KeyError(name)


def index_bounds(model):
    """{int input: the exclusive bound of its values} for the index inputs the
    model can take (labels in [0, classes), codes in [0, codebook size))."""
    return {name: getattr(model, attr) for name, (_, attr) in INDEX_INPUTS.items() if hasattr(model, attr)}


def _shape_check(x, name, dims):
    """An Assert that x has shape [batch, *dims] (or [] for dims=None)."""
    # Graph optimisers fold a rank they believe known from the declared spec;
    # PlaceholderWithDefault of unknown shape keeps what arrives opaque to them.
    x = tf.raw_ops.PlaceholderWithDefault(input=x, shape=None)
    shape = tf.raw_ops.Shape(input=x, out_type=tf.int32)
    if dims is None:  # a scalar, or one value in any shape ([1] from REST's row format)
        ok = tf.equal(tf.reduce_prod(shape), 1)
        return tf.debugging.Assert(ok, [f"input {name} must be a scalar; got shape", shape])
    rank = len(dims) + 1
    ok = tf.equal(tf.raw_ops.Rank(input=x), rank)
    # Also compared through the shape's values, with one more entry that must be
    # 0 (padding), so that an extra axis shows even where a rank was folded.
    got = tf.concat([shape, tf.zeros([rank + 1], tf.int32)], 0)[1 : rank + 1]
    ok = tf.logical_and(ok, tf.reduce_all(tf.equal(got, [*dims, 0])))
    expected = f"shape [batch, {', '.join(map(str, dims))}]"
    return tf.debugging.Assert(ok, [f"input {name} must have {expected}; got shape", shape])


def _value_checks(model, name, x):
    """Asserts on the values of one input (after its shape check)."""
    if name in ("z", "images"):
        checks = [tf.debugging.check_numerics(x, f"input {name} must be finite (no NaN or Inf)").op]
        if name == "images":
            low, high = -IMAGE_TOLERANCE, 1.0 + IMAGE_TOLERANCE
            flat = tf.reshape(x, [-1])  # reductions whose axes do not depend on a (folded) rank
            inside = tf.logical_and(tf.reduce_all(flat >= low), tf.reduce_all(flat <= high))
            checks.append(tf.debugging.Assert(
                inside, ["input images must be in [0, 1] (scale 8-bit pixels by 1/255); got min and max",
                         tf.reduce_min(flat), tf.reduce_max(flat)]))
        return checks
    if name in INDEX_INPUTS:
        what, attr = INDEX_INPUTS[name]
        return [_index_check(x, name, what, getattr(model, attr))]
    if name == "num_samples":
        inside = tf.logical_and(x >= 0, x <= MAX_SAMPLES)
        return [tf.debugging.Assert(inside, [f"input num_samples must be in [0, {MAX_SAMPLES}]; got", x])]
    return []


def _index_check(x, name, what, bound):
    """An Assert that every value of int input `name` is an index in [0, bound)."""
    flat = tf.reshape(x, [-1])
    inside = tf.logical_and(tf.reduce_all(flat >= 0), tf.reduce_all(flat < bound))
    return tf.debugging.Assert(
        inside, [f"input {name} must be {what} indices in [0, {bound}); got min and max",
                 tf.reduce_min(flat), tf.reduce_max(flat)])


def _dims(model, name):
    if name == "z":
        return [model.latent_dim]
    if name == "images":
        return list(model.image_shape)
    if name == "labels":
        return []
    if name == "codes":
        return list(model.code_grid)
    return None  # scalars


def checked(model, inputs):
    """The inputs {name: tensor} after graph checks of shape, values and
    batch agreement; every output computed from them waits for the checks."""
    shape_checks = [_shape_check(x, name, _dims(model, name)) for name, x in inputs.items()]
    with tf.control_dependencies(shape_checks):  # value checks assume the right shape
        inputs = {name: tf.reshape(x, []) if _dims(model, name) is None else tf.identity(x)
                  for name, x in inputs.items()}
    value_checks = [op for name, x in inputs.items() for op in _value_checks(model, name, x)]
    batched = ("z", "images", *INDEX_INPUTS)
    rows = {name: tf.raw_ops.Shape(input=x, out_type=tf.int32)[0] for name, x in inputs.items() if name in batched}
    if "num_samples" in inputs:
        rows["num_samples"] = inputs["num_samples"]
    if len(rows) > 1:
        (first, n), *others = rows.items()
        for name, m in others:
            value_checks.append(tf.debugging.Assert(
                tf.equal(n, m), [f"inputs {first} and {name} must have the same number of rows; got", n, m]))
    with tf.control_dependencies(value_checks):
        return {name: tf.identity(x) for name, x in inputs.items()}


def batch_size(inputs):
    """Rows of a request: num_samples, or the first dimension of its first input."""
    if "num_samples" in inputs:
        return inputs["num_samples"]
    return tf.raw_ops.Shape(input=next(iter(inputs.values())), out_type=tf.int32)[0]


def signature(model, fn, names):
    """tf.function over `fn(*inputs)` -> {output: tensor} with the typed input
    signature of `names`, its arguments named as the inputs (so restored
    functions take z=, labels=, images=), checked inputs (`checked`), and every
    output shaped [rows, ...] even for 0 rows (conv layers on an empty batch
    can answer another shape, or fail)."""

    def serve(*args):
        inputs = checked(model, dict(zip(names, args)))
        n = batch_size(inputs)
        if "num_samples" not in inputs:
            # an empty request runs on one row of zeros, sliced off below: oneDNN's conv kernels on
            # AVX512 CPUs reject an empty batch (InvalidArgument: input depth ... filter depth)
            inputs = {k: tf.cond(n > 0, lambda v=v: v, lambda v=v: tf.zeros(tf.concat([[1], tf.shape(v)[1:]], 0), v.dtype))
                      for k, v in inputs.items()}
        outputs = fn(*inputs.values())
        return {k: tf.reshape(v[:n], tf.concat([[n], v.shape[1:]], 0)) for k, v in outputs.items()}

    serve.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    )
    # No autograph: the models' methods are plain graph code, and autograph's
    # cache of converted lambdas once mixed up two models built in one process.
    return tf.function(serve, input_signature=[spec(model, n) for n in names], autograph=False)


def sample_noise(num_samples, seed, dim):
    """The noise `sample` draws: N(0, I) [num_samples, dim] from the stateless
    seed [seed, 0], so the same seed gives the same images and `generate` fed
    this z gives them too."""
    return tf.random.stateless_normal(tf.stack([num_samples, dim]), seed=tf.stack([seed, 0]))


def to_png(images):
    """Images [B, H, W, C] in [0, 1] -> PNG bytes [B] (8-bit, one per image)."""
    pixels = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)
    return tf.map_fn(tf.image.encode_png, pixels, fn_output_signature=tf.string)


def sample_signatures(model):
    """(fn, input names) of `sample` and `sample_png`: `generate` on noise drawn
    on the server (sample_noise); conditional models also take labels."""
    names = ("num_samples", "seed", "labels") if model.conditional else ("num_samples", "seed")

    def sample(num_samples, seed, labels=None):
        return {"images": model.generate(sample_noise(num_samples, seed, model.latent_dim), labels)}

    def sample_png(num_samples, seed, labels=None):
        return {"png_bytes": to_png(sample(num_samples, seed, labels)["images"])}

    return {"sample": (sample, names), "sample_png": (sample_png, names)}
