"""--lr_decay: the schedule's maths, and the callback that applies it per step."""

import math

import keras
import numpy as np
import pytest

from train import callbacks


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0])
def test_decay_factors_follow_their_formulas(t):
    assert callbacks.lr_decay_factor("none", t) == 1.0
    assert callbacks.lr_decay_factor("linear", t) == pytest.approx(1.0 - t)
    assert callbacks.lr_decay_factor("cosine", t) == pytest.approx(0.5 * (1.0 + math.cos(math.pi * t)))


def test_decay_starts_at_the_rate_and_ends_at_zero_and_clips_past_the_end():
    for kind in ("linear", "cosine"):
        assert callbacks.lr_decay_factor(kind, 0.0) == 1.0
        assert callbacks.lr_decay_factor(kind, 1.0) == pytest.approx(0.0, abs=1e-12)
        assert callbacks.lr_decay_factor(kind, 1.5) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="none, linear, cosine"):
        callbacks.lr_decay_factor("step", 0.5)


class RateLog(keras.callbacks.Callback):
    """The learning rate each step trained with (read after the decay set it)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


@pytest.mark.parametrize("start", [0, 3])
def test_each_step_trains_at_the_rate_of_its_own_step_also_when_resumed(start):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    decay = callbacks.LearningRateDecay([model.optimizer], [0.1], "cosine", total_steps=8, step=start)
    log = RateLog()
    x = np.zeros((4, 2), np.float32)
    model.fit(x, x[:, :1], batch_size=1, epochs=1, callbacks=[decay, log], verbose=0)
    expected = [0.1 * callbacks.lr_decay_factor("cosine", s / 8) for s in range(start, start + 4)]
    np.testing.assert_allclose(log.rates, expected, rtol=1e-6)
