"""VQ-VAE (zoo/vqvae.py): the nearest-code assignment, the straight-through
gradient, the loss terms and the EMA codebook update against their formulas,
the causal masks of the gated PixelCNN prior, inverse-CDF sampling, the two
training stages, a short training that lowers each stage's loss, the code
signatures and MirroredStrategy equivalence. Tiny shapes, fixed seeds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import run_mirrored_check, unchanged, weights
from zoo import distributions, layers, nets, vqvae

SHAPE = (8, 8, 1)  # a 4x4 code grid


def build(optimizer=lambda: keras.optimizers.SGD(0.05), **config):
    keras.utils.set_random_seed(0)
    model = zoo.build("vqvae", image_shape=SHAPE, num_classes=0,
                      **{"codebook_size": 8, "code_dim": 3, "prior_filters": 8, "prior_layers": 2, **config})
    model.compile(**{name: optimizer() for name in model.optimizer_names})
    return model


def test_nearest_codes_and_perplexity_match_their_formulas():
    rng = np.random.default_rng(0)
    z, codebook = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    brute = ((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(vqvae.nearest_codes(z, codebook), brute)
    assert float(vqvae.perplexity(tf.constant([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4.0)
    assert float(vqvae.perplexity(tf.constant([0.0, 9.0, 0.0]))) == pytest.approx(1.0)
    p = np.array([1.0, 3.0]) / 4
    assert float(vqvae.perplexity(tf.constant([1.0, 3.0]))) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)


def test_inverse_cdf_sampling_draws_the_softmax_distribution():
    logits = np.log(np.array([[0.2, 0.5, 0.3]], np.float32))
    u = np.array([0.1, 0.2 + 1e-4, 0.69, 0.71, 0.9999], np.float32)
    k = vqvae.inverse_cdf_sample(np.repeat(logits, 5, 0), u)
    np.testing.assert_array_equal(k, [0, 1, 1, 2, 2])
    # u -> 1 never draws a code of probability 0 (the last one here)
    never = np.log(np.array([[0.5, 0.5, 0.0]], np.float32) + 1e-30)
    np.testing.assert_array_equal(vqvae.inverse_cdf_sample(never, np.array([1.0 - 1e-7], np.float32)), [1])
    u = tf.random.stateless_uniform([20000], [1, 2])
    draws = vqvae.inverse_cdf_sample(tf.repeat(logits, 20000, 0), u).numpy()
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, [0.2, 0.5, 0.3], atol=0.015)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("mask", ["vertical", "horizontal"])
@pytest.mark.parametrize("centre", [False, True])
def test_masked_conv_equals_the_full_kernel_times_its_mask(k, mask, centre):
    """The layer holds only the kept taps; placed in a k x k kernel, they make
    the 'same' convolution with the masked kernel."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 6, 5, 3)).astype(np.float32))
    layer = layers.MaskedConv2D(4, k, mask=mask, include_centre=centre)
    out = layer(x)
    c = k // 2
    kernel = layer.kernel.numpy()
    assert kernel.shape[:2] == ((c + centre, k) if mask == "vertical" else (1, c + centre))
    full = np.zeros((k, k, 3, 4), np.float32)
    if mask == "vertical":
        full[: c + centre] = kernel
    else:
        full[c, : c + centre] = kernel[0]
    np.testing.assert_array_equal(full * np.array(layers.causal_mask(k, mask, centre))[:, :, None, None], full)
    expected = tf.nn.conv2d(x, full, 1, "SAME") + layer.bias
    np.testing.assert_allclose(out, expected, atol=1e-5)
    again = layers.MaskedConv2D.from_config(layer.get_config())
    again.build(x.shape)
    assert again.kernel.shape == layer.kernel.shape
    # a .keras file of the layer that held the whole masked k x k kernel loads its kept taps
    again.load_own_variables({"0": full * np.array(layers.causal_mask(k, mask, centre))[:, :, None, None],
                              "1": layer.bias.numpy()})
    np.testing.assert_allclose(again(x), out, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=4), dict(kernel_size=-3), dict(kernel_size=1),
                                    dict(kernel_size=(3, 5)), dict(strides=2), dict(dilation_rate=2),
                                    dict(data_format="channels_first")])
def test_masked_conv_refuses_what_its_padding_cannot_do(kwargs):
    with pytest.raises(ValueError, match="masked convolution"):
        layers.MaskedConv2D(4, **{"kernel_size": 3, **kwargs})


def test_masks_and_the_pixelcnn_are_causal():
    np.testing.assert_array_equal(layers.causal_mask(3, "vertical", False),
                                  [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(layers.causal_mask(3, "horizontal", True),
                                  [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    keras.utils.set_random_seed(0)
    grid, k = (5, 4), 6
    prior = nets.gated_pixelcnn(grid, k, filters=8, num_layers=3)
    codes = np.random.default_rng(0).integers(0, k, (1, *grid)).astype(np.int32)
    before = prior(codes).numpy().reshape(-1, k)
    reached = np.zeros((20, 20), bool)
    for q in range(20):
        changed = codes.copy().reshape(-1)
        changed[q] = (changed[q] + 1) % k
        after = prior(changed.reshape(1, *grid)).numpy().reshape(-1, k)
        moved = np.abs(after - before).max(1) > 1e-6
        assert not moved[: q + 1].any(), f"position {q} reaches the logits of positions {np.flatnonzero(moved[:q + 1])}"
        reached[q] = moved
    # every later position of the next row and the rest of the row read q (receptive field)
    assert reached[0, 1] and reached[0, 4] and reached[5, 6] and reached[5, 9]


def test_prior_dropout_acts_in_training_only():
    keras.utils.set_random_seed(0)
    prior = nets.gated_pixelcnn((4, 4), 6, filters=8, num_layers=2, dropout=0.5)
    plain = nets.gated_pixelcnn((4, 4), 6, filters=8, num_layers=2)
    plain.set_weights(prior.get_weights())  # dropout holds no weights
    codes = np.random.default_rng(0).integers(0, 6, (3, 4, 4)).astype(np.int32)
    np.testing.assert_array_equal(prior(codes, training=False), plain(codes, training=False))
    assert np.abs(prior(codes, training=True) - prior(codes, training=False)).max() > 1e-3


def test_loss_terms_match_their_formulas(digits64):
    model = build(commitment=0.5)
    x = tf.constant(digits64[0][:4])
    terms, z_e, indices = model.losses_of(x)
    codebook = model.codebook.numpy()
    flat = z_e.numpy().reshape(-1, 3)
    nearest = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(indices.numpy().reshape(-1), nearest)
    commitment = ((flat - codebook[nearest]) ** 2).reshape(4, -1).sum(1)
    np.testing.assert_allclose(terms["commitment"], commitment, rtol=1e-5)
    z_q = codebook[nearest].reshape(z_e.shape)
    reconstruction = distributions.bernoulli_nll(x, model.decoder(z_q))
    np.testing.assert_allclose(terms["reconstruction"], reconstruction, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], reconstruction + 0.5 * commitment, rtol=1e-5)
    # the codebook's own term with codebook_update="loss"
    learnt = build(commitment=0.5, codebook_update="loss")
    t, _, _ = learnt.losses_of(x)
    np.testing.assert_allclose(t["loss"], t["reconstruction"] + 1.5 * t["commitment"], rtol=1e-5)


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_gradients_pass_straight_through_and_stop_where_the_paper_stops_them(digits64, update):
    """d(loss)/d(encoder) = dz_e/dW^T [d rec/d z_q + 2 beta (z_e - e)]: the
    decoder's gradient at z_q passes to z_e unchanged, the commitment term
    pulls z_e to e; d(loss)/d(codebook) = sum over the vectors assigned to
    e_k of 2 (e_k - z_e) with codebook_update="loss" (nothing from the
    reconstruction or the commitment term), none with "ema"."""
    model = build(commitment=0.5, codebook_update=update)
    x = tf.constant(digits64[0][:4])
    encoder = model.encoder.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        terms, _, _ = model.losses_of(x)
        loss = tf.reduce_sum(terms["loss"])
    grads = tape.gradient(loss, encoder + [model.codebook])
    codebook = model.codebook.numpy()
    with tf.GradientTape(persistent=True) as tape:
        z_e = model.encoder(x)
        idx = vqvae.nearest_codes(tf.reshape(z_e, [-1, 3]), codebook).numpy()
        z_q = tf.constant(codebook[idx].reshape(z_e.shape))
        tape.watch(z_q)
        rec = tf.reduce_sum(distributions.bernoulli_nll(x, model.decoder(z_q)))
    g = tape.gradient(rec, z_q) + 2 * 0.5 * (z_e - z_q)
    expected = tape.gradient(z_e, encoder, output_gradients=g)
    for got, want in zip(grads[:-1], expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if update == "ema":
        assert grads[-1] is None
    else:
        flat = z_e.numpy().reshape(-1, 3)
        want = np.zeros_like(codebook)
        np.add.at(want, idx, 2 * (codebook[idx] - flat))
        np.testing.assert_allclose(tf.convert_to_tensor(grads[-1]), want, rtol=1e-4, atol=1e-5)


def test_ema_codebook_update_matches_its_formula(digits64):
    model = build(codebook_decay=0.9, restart_threshold=0.0)
    model.cluster_size.assign([1e-3] + [1.0] * 7)  # smoothing moves code 0's e by ~1%
    x = tf.constant(digits64[0][:8])
    size, sums, codebook = model.cluster_size.numpy(), model.code_sums.numpy(), model.codebook.numpy()
    np.testing.assert_allclose(sums, codebook)  # N = 1, M = e at the start
    assert model.codebook.trainable is False
    _, z_e, indices = model.losses_of(x)  # the step's forward pass, at the weights before it
    flat, idx = z_e.numpy().reshape(-1, 3), indices.numpy().reshape(-1)
    counts = np.bincount(idx, minlength=8).astype(np.float32)
    m = np.zeros_like(sums)
    np.add.at(m, idx, flat)
    model.train_step((x, tf.zeros([8], tf.int32)))
    size = 0.9 * size + 0.1 * counts
    sums = 0.9 * sums + 0.1 * m
    total = size.sum()
    smoothed = (size + vqvae.LAPLACE_EPSILON) / (total + 8 * vqvae.LAPLACE_EPSILON) * total
    np.testing.assert_allclose(model.cluster_size.numpy(), size, rtol=1e-5)
    np.testing.assert_allclose(model.code_sums.numpy(), sums, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.codebook.numpy(), sums / smoothed[:, None], rtol=1e-4, atol=1e-6)
    if counts[0] == 0:  # unused code 0: its N is tiny, and the smoothing shows
        assert np.abs(model.codebook.numpy()[0] - sums[0] / size[0]).max() > 1e-3


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_dead_codes_restart_at_encoder_outputs_of_the_batch(digits64, update):
    """Usage of an unused code after one step: 0.9 * 1 < 0.95, so it restarts
    at one of the step's encoder outputs with N = 1; used codes (>= 1) stay."""
    model = build(codebook_decay=0.9, restart_threshold=0.95, codebook_update=update)
    far = model.codebook.numpy()
    far[5:] = 100.0  # codes 5..7 are never nearest
    model.codebook.assign(far)
    if update == "ema":
        model.code_sums.assign(far)
    x = tf.constant(digits64[0][:8])
    _, z_e, indices = model.losses_of(x, training=True)
    used = np.bincount(indices.numpy().reshape(-1), minlength=8)
    assert used[5:].sum() == 0 and used.sum() == 8 * 16  # at initialisation one code may take all
    model.train_step((x, tf.zeros([8], tf.int32)))
    size, codebook = model.cluster_size.numpy(), model.codebook.numpy()
    outputs = z_e.numpy().reshape(-1, 3)
    for k in range(8):
        if used[k] == 0:
            assert size[k] == 1.0
            assert np.abs(outputs - codebook[k]).max(1).min() < 1e-6, k  # one of the batch's outputs
        else:
            assert size[k] == pytest.approx(0.9 + 0.1 * used[k])
    if update == "ema":
        np.testing.assert_array_equal(model.code_sums.numpy()[used == 0], codebook[used == 0])


def test_stage_one_trains_the_vq_vae_then_only_the_prior_trains(digits64):
    model = build(optimizer=lambda: keras.optimizers.Adam(1e-3), vq_steps=2)
    data = (tf.constant(digits64[0][:8]), tf.zeros([8], tf.int32))
    prior, vq = weights(model.prior), weights(model.encoder) + weights(model.decoder)
    for _ in range(2):
        logs = model.train_step(data)
    assert float(logs["stage"]) == 1.0
    assert unchanged(prior, model.prior) and model.prior_optimizer.iterations.numpy() == 0
    assert not unchanged(vq[: len(model.encoder.weights)], model.encoder)
    frozen = (weights(model.encoder), weights(model.decoder), model.codebook.numpy(),
              [v.numpy() for v in model.vq_optimizer.variables])
    frozen_size = model.cluster_size.numpy()
    for _ in range(3):
        logs = model.train_step(data)
    assert float(logs["stage"]) == pytest.approx((2 * 1 + 3 * 2) / 5)  # the mean over the five steps
    assert unchanged(frozen[0], model.encoder) and unchanged(frozen[1], model.decoder)
    np.testing.assert_array_equal(model.codebook.numpy(), frozen[2])
    for a, b in zip(frozen[3], model.vq_optimizer.variables):  # its Adam moments and step count too
        np.testing.assert_array_equal(a, b.numpy())
    assert not unchanged(prior, model.prior)
    assert int(model.train_steps_taken()) == 5 and model.prior_optimizer.iterations.numpy() == 3
    np.testing.assert_array_equal(model.cluster_size.numpy(), frozen_size)


def test_the_stage_boundary_survives_a_checkpoint(digits64, tmp_path):
    model = build(vq_steps=2)
    data = (tf.constant(digits64[0][:8]), tf.zeros([8], tf.int32))
    model.train_step(data)
    saved = tf.train.Checkpoint(model=model, **{n: getattr(model, n) for n in model.optimizer_names}).save(
        str(tmp_path / "ckpt"))
    restored = build(vq_steps=2)
    tf.train.Checkpoint(model=restored, **{n: getattr(restored, n) for n in restored.optimizer_names}).restore(saved)
    assert float(restored.train_step(data)["stage"]) == 1.0  # step 2 of 2 of the first stage
    restored.reset_metrics()
    assert float(restored.train_step(data)["stage"]) == 2.0


def test_a_loss_scale_leaves_the_prior_update_unchanged(digits64):
    """The second stage's loss is scaled and its gradients unscaled (test_loss_scaling's
    every-model check takes one step, of the first stage)."""
    data = (tf.constant(digits64[0][:8]), tf.zeros([8], tf.int32))
    updates = []
    for factor in (None, 256.0):
        model = build(optimizer=lambda: keras.optimizers.SGD(0.5, loss_scale_factor=factor), vq_steps=0)
        before = weights(model.prior)
        model.train_step(data)
        updates.append([a - b for a, b in zip(weights(model.prior), before)])
    assert max(np.abs(u).max() for u in updates[0]) > 1e-4
    for plain, scaled in zip(*updates):
        np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-6)


def test_training_lowers_each_stage_loss(digits):
    keras.utils.set_random_seed(0)
    x = digits.train_images[:256]
    model = zoo.build("vqvae", image_shape=x.shape[1:], num_classes=10, codebook_size=16, code_dim=4,
                      prior_filters=16, prior_layers=2, vq_steps=60)
    model.compile(**model.compile_defaults(learning_rate=3e-3))
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int32))).batch(32, drop_remainder=True)
    history = model.fit(data.repeat(), steps_per_epoch=30, epochs=4, verbose=0).history
    assert history["stage"] == [1.0, 1.0, 2.0, 2.0]
    assert history["reconstruction"][1] < 0.8 * history["reconstruction"][0], history
    assert history["prior_nll"][:2] == [0.0, 0.0]  # tracked over the prior's steps only
    assert history["prior_nll"][3] < 0.9 * history["prior_nll"][2], history
    assert history["perplexity"][1] > 2.0, history


def test_generate_draws_each_code_from_the_prior_given_the_codes_before_it():
    model = build(prior_layers=3)
    for w in model.prior.trainable_weights:  # a prior far from uniform
        w.assign(tf.random.stateless_normal(w.shape, [3, 4]) * 0.5)
    z = tf.random.stateless_normal([6, model.latent_dim], [5, 6])
    codes = model.sample_codes(z)
    assert codes.shape == (6, 4, 4) and model.latent_dim == 16
    # causal: the logits on the finished grid are those each draw read
    logits = model.prior(codes).numpy().reshape(6, 16, -1)
    u = 0.5 * tf.math.erfc(-z / math.sqrt(2.0))
    for p in range(16):
        np.testing.assert_array_equal(codes.numpy().reshape(6, 16)[:, p], vqvae.inverse_cdf_sample(logits[:, p], u[:, p]))
    np.testing.assert_array_equal(model.generate(z), model.decode_codes(codes))
    np.testing.assert_array_equal(model.generate(z), model.generate(z))


def test_code_signatures_round_trip_and_refuse_bad_codes(digits64):
    model = build()
    signatures = model.serving_signatures()
    x = tf.constant(digits64[0][:3])
    codes = signatures["encode"](x)["codes"]
    assert codes.dtype == tf.int32 and codes.shape == (3, 4, 4)
    np.testing.assert_allclose(signatures["decode"](codes)["images"], model.reconstruct(x), atol=1e-6)
    np.testing.assert_allclose(signatures["reconstruct"](x)["images"], model.reconstruct(x), atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input codes must be code indices in \[0, 8\)"):
        signatures["decode"](tf.fill([2, 4, 4], 8))
    with pytest.raises(TypeError, match=r"codes"):  # in Python; servers feeding the graph: test_serving
        signatures["decode"](tf.zeros([2, 16], tf.int32))
    # the export's example requests (verification, warmup) draw codes over the whole codebook, from the
    # bound that the graph check reads
    from export import saved_model
    from zoo import serving

    assert serving.index_bounds(model) == {"labels": 0, "codes": 8}
    example = saved_model.example_inputs(signatures["decode"], serving.index_bounds(model), n=64)
    assert set(np.unique(example["codes"])) == set(range(8))
    assert signatures["decode"](**example)["images"].shape[0] == 64


@pytest.mark.parametrize("options", [dict(codebook_size=1), dict(codebook_decay=1.0), dict(vq_steps=-1),
                                     dict(codebook_update="kmeans"), dict(prior_dropout=1.0),
                                     dict(prior_dropout=1e-6)])
def test_bad_options_are_one_line_errors(options):
    with pytest.raises(ValueError, match="codebook|vq_steps|prior_dropout"):
        zoo.build("vqvae", image_shape=SHAPE, **options)


def test_mirrored_strategy_matches_one_device():
    """Global-batch means, all-reduced EMA statistics and the stage read from
    the step counts: 2 replicas make one device's update, in either stage and
    with either codebook update."""
    result = run_mirrored_check("vqvae", "vqvae_loss", "vqvae_prior")
    for case in ("vqvae", "vqvae_loss", "vqvae_prior"):  # vqvae_prior: two steps of the prior alone
        assert result[case]["moved"] > 1e-3 and result[case]["max_diff"] < 1e-5, result
