"""An exponential moving average of network weights for inference (Yazici et
al. 2019, "The unusual effectiveness of averaging in GAN training").

With decay d > 0 (a model's `ema_decay` option; 0 = off), after every train
step every weight w of the averaged networks -- the trainable ones and the
floating-point non-trainable ones such as batch-norm moving statistics -- moves
its average by

    w_ema <- d_t * w_ema + (1 - d_t) * w,   d_t = min(d, (1 + t) / (10 + t)),

t the number of train steps taken (the step optimizer's iterations after the
step). d_t is the warm-up of tf.train.ExponentialMovingAverage(num_updates=t):
without it the average of a short run would still hold d^t of the random
initial weights (0.999^1500 = 22% after 1,500 steps, a blurred generator);
from t = (10 d - 1) / (1 - d) on (8,990 steps for d = 0.999) d_t = d.

(integer state, e.g. a dropout's seed, is not averaged: the averaged network
reads the live value). Training runs on the raw weights, and so do the losses
of train_step and test_step (D plays against the raw networks); the model's
inference methods (generate, decode, encode, reconstruct: whatever each model
routes through `averaged_call`) run the networks on the averages, through
Keras's `network.stateless_call` with training=False. So sample grids,
train.evaluate and the exported SavedModel serve the averaged networks.

w_ema starts equal to w: the averages are created at construction as copies of
the networks' initial weights. They are float32 (the dtype of the weights they
average, also under a mixed policy) non-trainable weights of the model, so
.keras files, tf.train.Checkpoint(model=...) and SavedModels hold them and a
restored model continues the same average. Weights loaded into a network alone
(network.set_weights, not the model's) leave its average where it was. With
d = 0 no average exists: the model has exactly the weights it had before.

Under tf.distribute the update runs in replica context inside train_step; the
averages are aggregated "only_first_replica" (every replica holds the same
weights, so replica 0's update is everyone's).
"""

import contextlib

import tensorflow as tf

HELP = (
    "decay d of an exponential moving average of the generating networks' weights, "
    "w_ema <- d_t w_ema + (1 - d_t) w after step t, d_t = min(d, (1 + t) / (10 + t)), that "
    "generate/decode/encode use (Yazici et al. 2019; e.g. 0.999); 0: off"
)


def averaged(variable):
    """Whether `variable` gets an average (floating-point weights only)."""
    return variable.dtype.startswith("float") or variable.dtype.startswith("bfloat")


class Averaging:
    """Mixin of a ZooModel whose Config has `ema_decay`: the model lists the
    attribute names of the networks it averages in `ema_networks`, calls
    `build_ema()` once they exist, `update_ema()` at the end of train_step, and
    runs them for inference through `averaged_call(name, inputs)`.

    The average of the i-th averaged weight of network `name` is the model
    attribute `ema_<name>_<i>`: an attribute (not a list) so that
    tf.train.Checkpoint(model=...) tracks it, as it does the samplers' weights."""

    ema_networks = ()
    capabilities = frozenset({"averaging"})

    @property
    def uses_average(self):
        return self.config.ema_decay > 0

    def build_ema(self):
        """Creates the averages (copies of the current weights) when ema_decay > 0;
        with ema_decay = 0 the model gets nothing new."""
        decay = self.config.ema_decay
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
        if decay == 0.0:
            return
        for name in self.ema_networks:
            for i, w in enumerate(averaged_weights(getattr(self, name))):
                average = self.add_weight(
                    shape=w.shape,
                    initializer=_copy_of(w),
                    dtype=w.dtype,
                    trainable=False,
                    autocast=False,
                    aggregation="only_first_replica",
                    name=f"ema_{name}_{i}",
                )
                setattr(self, f"ema_{name}_{i}", average)

    def ema_pairs(self, name):
        """[(w, w_ema)] of network `name` (empty when ema_decay = 0)."""
        if not self.config.ema_decay:
            return []
        weights = averaged_weights(getattr(self, name))
        return [(w, getattr(self, f"ema_{name}_{i}")) for i, w in enumerate(weights)]

    def ema_decay_at(self, steps):
        """d_t = min(d, (1 + t) / (10 + t)) after t train steps (see the module docstring)."""
        t = tf.cast(steps, tf.float32)
        return tf.minimum(float(self.config.ema_decay), (1.0 + t) / (10.0 + t))

    def update_ema(self):
        """w_ema <- d_t * w_ema + (1 - d_t) * w for every averaged weight, t the
        train steps taken (train_steps_taken); call it after a step's updates
        (a no-op when ema_decay = 0)."""
        if not self.config.ema_decay:
            return
        decay = self.ema_decay_at(self.train_steps_taken())
        for name in self.ema_networks:
            for w, w_ema in self.ema_pairs(name):
                w_ema.assign(decay * w_ema.value + (1.0 - decay) * tf.cast(w.value, w_ema.dtype))

    @contextlib.contextmanager
    def raw_weights(self):
        """Within: inference (generate, encode, ...) runs eagerly on the raw
        weights, to measure what the average adds (train.evaluate --weights=raw)."""
        self._raw_inference = True
        try:
            yield self
        finally:
            self._raw_inference = False

    def averaged_call(self, name, inputs, **kwargs):
        """Network `name` on `inputs` with its averaged weights, in inference
        mode; `network(inputs, **kwargs)` when ema_decay = 0 (or within raw_weights())."""
        network = getattr(self, name)
        if not self.config.ema_decay or getattr(self, "_raw_inference", False):
            return network(inputs, **kwargs)
        if kwargs.get("training"):
            raise ValueError("the moving averages are for inference: call the network itself to train it")
        averages = {id(w): w_ema for w, w_ema in self.ema_pairs(name)}
        trainable = [averages.get(id(w), w) for w in network.trainable_variables]
        non_trainable = [averages.get(id(w), w) for w in network.non_trainable_variables]
        outputs, _ = network.stateless_call(trainable, non_trainable, inputs, **{**kwargs, "training": False})
        return outputs


def averaged_weights(network):
    """The weights of `network` that have an average, in a fixed order (that of
    network.weights, which does not change when a layer is frozen)."""
    return [w for w in network.weights if averaged(w)]


def _copy_of(variable):
    """An initializer returning the current value of `variable`."""

    def initializer(shape, dtype=None):
        return tf.cast(tf.identity(variable.value), dtype or variable.dtype)

    return initializer
