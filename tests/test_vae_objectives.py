"""The VAE's objectives beside the ELBO: beta-VAE, the controlled capacity and
the IWAE bound as a training loss; the maths, the options that do not mix,
and that a train step minimises them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import vae

SHAPE = (8, 8, 1)


def build(**options):
    model = zoo.build("vae", image_shape=SHAPE, latent_dim=3, net="mlp", seed=1, **options)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)


def test_beta_and_capacity_losses_are_their_formulas():
    rec, kl = tf.constant([10.0, 20.0]), tf.constant([3.0, 7.0])
    np.testing.assert_allclose(vae.beta_vae_loss(rec, kl, 4.0).numpy(), [10 + 4 * 3, 20 + 4 * 7])
    np.testing.assert_allclose(vae.capacity_loss(rec, kl, 5.0, 100.0).numpy(), [10 + 100 * 2, 20 + 100 * 2])


def test_capacity_rises_linearly_from_zero_and_the_loss_follows_it_step_by_step():
    model = build(beta=10.0, capacity_max=6.0, capacity_steps=3)
    steps = [tf.constant(t, tf.int64) for t in range(5)]
    np.testing.assert_allclose([float(model.capacity(t)) for t in steps], [0.0, 2.0, 4.0, 6.0, 6.0])
    assert float(build(capacity_max=6.0).capacity(steps[0])) == 6.0  # capacity_steps=0: C from the start
    rec, kl = tf.constant([50.0, 50.0]), tf.constant([1.0, 9.0])
    loss = [model.elbo_loss(None, rec, kl, t).numpy() for t in steps[:4]]
    np.testing.assert_allclose(loss, [[50 + 10 * abs(k - c) for k in (1.0, 9.0)] for c in (0, 2, 4, 6)], rtol=1e-6)
    # beta with warm-up: beta * w_t * KL, w_t = (t + 1) / 4
    warm = build(beta=2.0, kl_warmup_steps=4)
    np.testing.assert_allclose(warm.elbo_loss(None, rec, kl, steps[1]).numpy(), 50 + 2.0 * 0.5 * kl.numpy())


def test_beta_one_is_the_previous_loss_bit_for_bit(images):
    """The default options give exactly the loss of before these options:
    rec + w_t KL' (w_t the warm-up weight, KL' after free bits) at the same z."""
    for options in ({}, {"kl_warmup_steps": 5, "free_bits": 0.3}):
        model = build(**options)
        step = model.optimizer.iterations
        q, rec, kl = model._elbo_parts(images, None, model._step_seed())
        before = rec + model.kl_weight(step) * model.kl_objective(q, kl)
        loss, tracked, _, _ = model.objective_parts(images, None, step)
        assert np.array_equal(loss.numpy(), before.numpy()), options
        assert np.array_equal(tracked.numpy(), (rec + kl).numpy())  # the tracked loss stays the -ELBO


@pytest.mark.parametrize("options, message", [
    ({"capacity_max": 5.0, "kl_warmup_steps": 10}, "without kl_warmup_steps and free_bits"),
    ({"capacity_max": 5.0, "free_bits": 0.5}, "without kl_warmup_steps and free_bits"),
    ({"capacity_max": 5.0, "prior": "gmm"}, "capacity_max needs an analytic KL"),
    ({"objective": "iwae", "beta": 4.0}, "objective=iwae has no KL term"),
    ({"objective": "iwae", "kl_warmup_steps": 10}, "objective=iwae has no KL term"),
    ({"beta": -1.0}, "must be >= 0"),
    ({"train_k": 0}, "train_k >= 1"),
    ({"objective": "vimco"}, "choose one of: elbo, iwae"),
])
def test_options_that_do_not_go_together_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("cvae", image_shape=SHAPE, num_classes=3, **options)


def test_iwae_loss_gradient_is_the_normalised_importance_weights():
    log_w = tf.Variable([[0.0, -1.0], [1.0, -1.0], [-2.0, -1.0]])  # K = 3, B = 2
    with tf.GradientTape() as tape:
        loss = vae.iwae_loss(log_w)
    w = np.exp(log_w.numpy())
    np.testing.assert_allclose(loss.numpy(), -np.log(w.mean(0)), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, log_w).numpy(), -w / w.sum(0), rtol=1e-6)


def test_iwae_with_one_draw_is_the_elbo_at_the_same_z(images):
    # gmm prior: the ELBO's KL is log q(z|x) - log p(z) at its z, so both losses are the same number
    elbo, iwae = build(prior="gmm"), build(prior="gmm", objective="iwae", train_k=1)
    iwae.set_weights(elbo.get_weights())
    step = elbo.optimizer.iterations
    np.testing.assert_allclose(iwae.objective_parts(images, None, step)[0].numpy(),
                               elbo.objective_parts(images, None, step)[0].numpy(), rtol=1e-5)
    # N(0, I) prior: the one-draw -ELBO with the Monte Carlo KL at the ELBO's z
    model = build(objective="iwae", train_k=1)
    q = model.posterior(images)
    z = model.posterior_sample(q, model._step_seed())
    one_draw = -model.likelihood(z).log_prob(images) + q.log_prob(z) - model.prior().log_prob(z)
    np.testing.assert_allclose(model.objective_parts(images, None, step)[0].numpy(), one_draw.numpy(), rtol=1e-5)


def test_more_draws_bound_log_px_tighter_on_average(images):
    model = build(objective="iwae")
    seeds = [tf.constant([s, 3], tf.int64) for s in range(6)]
    losses = {k: np.mean([model.iwae_parts(images, None, s, k)[0].numpy() for s in seeds]) for k in (1, 8)}
    assert losses[8] < losses[1], losses  # -IWAE_8 <= -ELBO in expectation


def test_a_train_step_lowers_the_iwae_loss_at_its_draws(images):
    model = build(objective="iwae", train_k=4)
    seed = model._step_seed().numpy()  # the draws of the first step
    before = model.iwae_parts(images, None, seed, 4)[0].numpy().mean()
    logs = model.train_on_batch(images, return_dict=True)
    after = model.iwae_parts(images, None, seed, 4)[0].numpy().mean()
    np.testing.assert_allclose(logs["loss"], before, rtol=1e-5)  # the tracked loss is the -IWAE bound
    assert after < before - 1e-3, (before, after)
