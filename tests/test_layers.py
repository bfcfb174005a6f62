"""zoo.layers: the fused BatchNormalization computes keras.layers.BatchNormalization's
function, and Dropout keeps each unit with probability 1 - p, unbiased."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fork_server
from zoo.layers import BatchNormalization, Dropout, keep_mask


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _run(layer, x, training):
    """(output, grads wrt x and the trainable weights, moving statistics after the call)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(x))  # a non-trivial upstream gradient
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [tf.cast(t, tf.float32).numpy() for t in [y, *grads, *layer.non_trainable_weights]]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("shape", [(32, 40), (16, 5, 5, 12)])
def test_batch_norm_equals_keras(policy, shape):
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(*shape).astype(np.float32) * 3 + 1)
    ours, keras_bn = BatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (ours, keras_bn):
        layer.build(shape)
    for mine, theirs in zip(ours.weights, keras_bn.weights):  # gamma, beta, moving mean, moving var
        mine.assign(rng.rand(*mine.shape).astype(np.float32) + 0.5)
        theirs.assign(mine)
    # bfloat16 outputs differ by rounding: a unit in the last of 8 bits.
    rtol = 1e-5 if policy == "float32" else 1e-2
    for training in (True, False):
        got, want = _run(ours, x, training), _run(keras_bn, x, training)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())
    assert ours.compute_dtype == keras_bn.compute_dtype
    assert ours.name.startswith("batch_normalization")  # Keras's names, so saved weights load


def test_batch_norm_is_one_fused_op():
    bn = BatchNormalization()
    graph = tf.function(lambda x: bn(x, training=True)).get_concrete_function(tf.TensorSpec([8, 4, 4, 3])).graph
    ops = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in ops and "Mean" not in ops


SYNC_CHECK = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from zoo.layers import BatchNormalization
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.concatenate([np.zeros((4, 3)), np.ones((4, 3)) * 2]).astype(np.float32)  # replica means 0 and 2
with strategy.scope():
    bn = BatchNormalization(synchronized=True, epsilon=1e-3)
    bn.build((None, 3))
batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))))
out = strategy.run(tf.function(lambda b: bn(b, training=True)), args=(batch,))
y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
np.testing.assert_allclose(y, (x - 1.0) / np.sqrt(1.0 + 1e-3), rtol=1e-5, atol=1e-5)  # global mean 1, var 1
print("ok")
"""


def test_batch_norm_synchronizes_over_replicas():
    """With several replicas a synchronized BatchNormalization normalises with the
    statistics of the global batch (Keras's all-reduce), not the replica's."""
    proc = fork_server()([SYNC_CHECK], timeout=300, kind="code")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_keep_mask_rate_and_scale():
    n = 1_000_000
    for shape in ([1000, 1000], [999, 1001]):  # even last axis (two units per word) and odd
        keep, scale = keep_mask(shape, 0.3, tf.constant([1, 2]))
        assert keep.shape == tuple(shape) and keep.dtype == tf.bool
        frac = float(tf.reduce_mean(tf.cast(keep, tf.float64)))
        p = round(0.3 * 65536) / 65536
        assert abs(frac - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
        assert scale == pytest.approx(1 / (1 - p))
    with pytest.raises(ValueError, match="rate must be in"):
        keep_mask([4], 1.0, tf.constant([1, 2]))


def test_keep_mask_units_independent():
    """Neighbouring units (the two halves of one random word) are uncorrelated."""
    keep, _ = keep_mask([500_000, 2], 0.5, tf.constant([3, 4]))
    k = keep.numpy().astype(np.float64)
    corr = np.corrcoef(k[:, 0], k[:, 1])[0, 1]
    assert abs(corr) < 5 / np.sqrt(500_000)


def test_keep_mask_seeds_independent_and_same_under_xla():
    """Masks of neighbouring seeds (a layer's successive steps) are uncorrelated
    at every shift (a one-round hash of i + key would make them shifted copies),
    and XLA computes the same mask as the plain graph."""
    n = 200_000
    a = keep_mask([n], 0.5, tf.constant([5, 9]))[0].numpy().astype(np.float64)
    b = keep_mask([n], 0.5, tf.constant([6, 9]))[0].numpy().astype(np.float64)
    c = keep_mask([n], 0.5, tf.constant([5, 10]))[0].numpy().astype(np.float64)
    bound = 5 / np.sqrt(n)
    for other in (b, c):
        for shift in (0, 1, 2, 7):
            assert abs(np.corrcoef(a[shift:], other[: n - shift])[0, 1]) < bound
            assert abs(np.corrcoef(a[: n - shift], other[shift:])[0, 1]) < bound
    xla = tf.function(lambda seed: keep_mask([33, 17], 0.3, seed)[0], jit_compile=True)
    np.testing.assert_array_equal(xla(tf.constant([5, 9])), keep_mask([33, 17], 0.3, tf.constant([5, 9]))[0])


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
def test_dropout_training_and_inference(policy):
    layer = Dropout(0.3, seed=7)
    x = tf.ones([64, 7, 7, 32])
    step = tf.function(lambda x: layer(x, training=True))
    first, second = step(x), step(x)
    assert first.dtype == layer.compute_dtype
    first = tf.cast(first, tf.float32).numpy()
    # Unbiased: E[y] = x (the mean of 100k units is within 5 standard errors of 1).
    assert abs(first.mean() - 1.0) < 5 * np.sqrt(0.3 / 0.7 / first.size)
    scale = 65536 / (65536 - round(0.3 * 65536))  # 1 / (1 - p), p as keep_mask rounds it
    assert set(np.unique(first)) <= {0.0, float(tf.cast(tf.constant(scale), layer.compute_dtype))}
    assert (first != tf.cast(second, tf.float32).numpy()).any()  # a new mask every call
    np.testing.assert_array_equal(layer(x, training=False), x)  # identity in inference


def test_dropout_gradient_is_the_mask():
    layer = Dropout(0.5, seed=1)
    x = tf.random.normal([16, 10])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(grad * x.numpy(), y.numpy(), rtol=1e-6)  # y = x * m, dy/dx = m
    assert set(np.round(np.unique(grad), 5)) == {0.0, 2.0}


def test_dropout_reproducible_from_seed_and_dynamic_batch():
    masks = []
    for _ in range(2):
        layer = Dropout(0.3, seed=5)
        fn = tf.function(lambda x: layer(x, training=True), input_signature=[tf.TensorSpec([None, 6])])
        masks.append(fn(tf.ones([9, 6])).numpy())
    np.testing.assert_array_equal(*masks)
    assert masks[0].shape == (9, 6)
