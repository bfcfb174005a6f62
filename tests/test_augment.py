"""zoo.augment (DiffAugment): each transformation against a numpy reference of
its definition, gradients through it, shapes and ranges, policies, and the
global-batch draws that make 2 replicas transform as one device."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import fork_server
from zoo import augment

SEED = tf.constant([3, 9], tf.int64)


def images(n=16, shape=(8, 8, 1), seed=0):
    """Images in [-1, 1] (D's input range)."""
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32))


def test_translation_shifts_each_image_with_zero_padding():
    x = images(32, (8, 8, 2))
    y = augment.translation(x, SEED).numpy()
    dy, dx = (t.numpy() for t in augment.translation_offsets(x, SEED))
    assert set(dy) <= {-1, 0, 1} and set(dx) <= {-1, 0, 1}  # up to 1/8 of 8 pixels
    assert len(set(zip(dy, dx))) > 3  # drawn per example
    expected = np.zeros_like(y)
    for b in range(32):
        for i in range(8):
            for j in range(8):
                if 0 <= i - dy[b] < 8 and 0 <= j - dx[b] < 8:
                    expected[b, i, j] = x.numpy()[b, i - dy[b], j - dx[b]]
    np.testing.assert_array_equal(y, expected)


def test_translation_range_scales_with_the_image():
    dy, dx = (t.numpy() for t in augment.translation_offsets(images(256, (32, 24, 1)), SEED))
    assert dy.min() == -4 and dy.max() == 4  # round(32 / 8)
    assert dx.min() == -3 and dx.max() == 3  # round(24 / 8)


def test_cutout_zeroes_a_half_size_square_per_image():
    x = images(64, (8, 8, 3))
    y = augment.cutout(x, SEED).numpy()
    mask = augment.cutout_mask(x, SEED).numpy()[..., 0]
    np.testing.assert_array_equal(y, x.numpy() * mask[..., None])
    corners = set()
    for m in mask:
        rows, cols = np.nonzero(m == 0)
        assert len(rows) > 0
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert (m[r0:r1, c0:c1] == 0).all() and (m == 0).sum() == (r1 - r0) * (c1 - c0)  # one rectangle
        assert 2 <= r1 - r0 <= 4 and 2 <= c1 - c0 <= 4  # a 4x4 square, clipped at the border
        assert (r1 - r0 == 4 or r0 == 0 or r1 == 8) and (c1 - c0 == 4 or c0 == 0 or c1 == 8)
        corners.add((r0, c0))
    assert len(corners) > 10  # drawn per example


def test_color_matches_its_formula_on_rgb_and_is_the_identity_otherwise():
    grey = images(4, (8, 8, 1))
    assert augment.color(grey, SEED) is grey
    x = images(8, (8, 8, 3))
    a, b, c = augment.uniform(x, 3, SEED).numpy().T
    e = x.numpy() + (a - 0.5)[:, None, None, None]
    mean = e.mean(axis=3, keepdims=True)
    e = (e - mean) * (2 * b)[:, None, None, None] + mean
    mean = e.mean(axis=(1, 2, 3), keepdims=True)
    e = (e - mean) * (c + 0.5)[:, None, None, None] + mean
    np.testing.assert_allclose(augment.color(x, SEED).numpy(), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["translation", "cutout", "color"])
def test_gradients_flow_through_each_augmentation(name):
    x = images(8, (8, 8, 3))
    upstream = tf.constant(np.random.default_rng(1).standard_normal(x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment.FUNCTIONS[name](x, SEED)
        loss = tf.reduce_sum(y * upstream)
    grad = tape.gradient(loss, x)
    assert grad is not None
    # every example gets some gradient; the kept pixels carry the upstream gradient
    assert (np.abs(grad.numpy()).reshape(8, -1).max(axis=1) > 0).all()
    if name == "cutout":
        np.testing.assert_array_equal(grad.numpy(), augment.cutout_mask(x, SEED).numpy() * upstream.numpy())
    if name == "translation":  # each output pixel reads one input pixel or the padding
        assert np.isclose(grad.numpy().sum(), tf.reduce_sum(upstream * tf.cast(y != 0, tf.float32)).numpy(), rtol=1e-5)


@pytest.mark.parametrize("policy", ["translation", "cutout", "color", "translation,cutout", "color,translation,cutout"])
def test_shape_dtype_and_range(policy):
    x = images(16, (8, 8, 3))
    y = augment.apply(x, policy, SEED)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.isfinite(y.numpy()).all()
    if "color" not in policy:  # pixels are moved or zeroed, never made: [-1, 1] stays [-1, 1]
        assert float(tf.reduce_min(y)) >= -1.0 and float(tf.reduce_max(y)) <= 1.0
    assert not np.array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(augment.apply(x, policy, SEED).numpy(), y.numpy())  # stateless
    assert not np.array_equal(augment.apply(x, policy, SEED + 1).numpy(), y.numpy())


def test_policies_compose_in_order_with_their_own_streams():
    x = images(8, (8, 8, 3))
    y = augment.apply(x, " translation , cutout ", SEED)
    fold = tf.random.experimental.stateless_fold_in
    expected = augment.cutout(augment.translation(x, fold(SEED, 0)), fold(SEED, 1))
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    assert augment.apply(x, "", SEED) is x  # empty policy: the identity, no ops
    assert augment.parse("") == () and augment.parse("cutout,color") == ("cutout", "color")


def test_unknown_policy_is_one_line_listing_the_valid_ones():
    with pytest.raises(ValueError) as error:
        augment.parse("translation,flip")
    message = str(error.value)
    assert "\n" not in message and "'flip'" in message
    for name in augment.FUNCTIONS:
        assert name in message


REPLICA_CHECK = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from zoo import augment
x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32))
seed = tf.constant([5, 1], tf.int64)
policy = "translation,cutout,color"
one = augment.apply(x, policy, seed).numpy()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
halves = strategy.experimental_distribute_values_from_function(
    lambda ctx: x[4 * ctx.replica_id_in_sync_group : 4 * ctx.replica_id_in_sync_group + 4]
)
out = strategy.run(tf.function(lambda h: augment.apply(h, policy, seed)), args=(halves,))
two = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
# the replicas did transform differently from each other's draws (no shared slice)
alone = augment.apply(x[4:], policy, seed).numpy()
print(float(np.max(np.abs(one - two))), float(np.max(np.abs(two[4:] - alone))))
"""


def test_two_replicas_together_draw_what_one_device_draws():
    done = fork_server()([REPLICA_CHECK], timeout=300, env={"CUDA_VISIBLE_DEVICES": ""}, kind="code")
    assert done.returncode == 0, done.stderr[-3000:]
    same, naive = map(float, done.stdout.split()[-2:])
    assert same == 0.0
    assert naive > 0.1  # replica 1's slice is not what its half alone would draw
