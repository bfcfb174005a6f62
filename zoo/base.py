"""What every zoo model shares: config handling, noise and loss averaging that stay
correct under tf.distribute, label handling and the typed specs of the serving
signatures. Model-specific maths lives in each model's own file."""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from zoo import serving

# Type hint of the public API's inputs: tensors, numpy arrays, nested lists of numbers.
TensorLike = tf.types.experimental.TensorLike

KERAS_KWARGS = ("name", "trainable", "dtype")


# The capabilities a model class can declare, and the methods each promises:
CAPABILITIES = {
    "encoder": "encode(images, labels) -> codes [B, J], encode_all, reconstruct",
    "decoder": "decode(z, labels) -> images in [0, 1]",
    "fitted_sampler": "fit_sampler / try_fit_sampler: generate from a distribution fitted to the training codes",
    "likelihood": "elbo_terms and iwae_bound: bounds on log p(x) (log p(x | y) if conditional), "
                  "bound_kind (what they bound), evaluation_images (what they are scored on)",
    "conditional": "every generate, encode and decode takes labels",
    "averaging": "an exponential moving average of weights (the Config's ema_decay)",
    "categorical_code": "categories (K) and with_category(z, k): z whose categorical code is k (InfoGAN; "
                        "ssaae's prior sampler)",
    "semi_supervised": "classify(images) -> class probabilities; labelled_count and set_labelled(images, labels), "
                       "the labelled examples its classification phase reads (train.run takes them from the train split)",
}


def check_capability(capability):
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; valid: {', '.join(CAPABILITIES)}")
    return capability


def option(default, help, choices=None):
    """A config field with the help text (and valid choices) that the CLI shows."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def check_choices(config):
    """Raises ValueError for a config field whose value is not one of its choices."""
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if choices and value not in choices:
            raise ValueError(
                f"{field.name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
            )


# ---------------------------------------------------------------------------
# Distribution-aware helpers for custom train steps.


def num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_mean(per_example):
    """sum_i l_i / B_global over this replica's examples.

    Keras sums gradients across replicas, so this is the term whose gradient,
    summed over N replicas, equals the gradient of the mean over the global batch
    (the update does not depend on N)."""
    per_example = tf.cast(per_example, tf.float32)
    global_batch = tf.cast(tf.shape(per_example)[0] * num_replicas(), tf.float32)
    return tf.reduce_sum(per_example) / global_batch



def minimize(optimizer, variables, loss_fn):
    """One update of `variables` by `optimizer` on the global-batch mean of
    per-example losses, the step every train step of the zoo is made of:

        w <- w - step(grad_w (1/B_global) sum_i l_i(w)),

    with l = loss_fn() [B] (or the first element of the tuple it returns),
    computed under the tape. The mean is scaled by optimizer.scale_loss (a
    loss-scaling optimizer's factor; 1 otherwise) and optimizer.apply unscales
    the gradients. Returns what loss_fn returned, the losses before the update."""
    with tf.GradientTape() as tape:
        out = loss_fn()
        per_example = out[0] if isinstance(out, tuple) else out
        loss = optimizer.scale_loss(global_mean(per_example))
    optimizer.apply(tape.gradient(loss, variables), variables)
    return out


UPDATES = ("alternating", "simultaneous")  # how an adversarial train step makes its updates
UPDATE_HELP = (
    "alternating: D then the other players on fresh noise (Algorithm 1); "
    "simultaneous: every update from one forward pass (faster)"
)


def minimize_simultaneously(players, loss_fn, gates=None):
    """A simultaneous gradient step of several players, each on its own loss,
    from one forward pass:

        w_p <- w_p - step_p(grad_{w_p} (1/B_global) sum_i l_{p,i}(w))   for every player p,

    every gradient taken at the weights of before the step. players is a list of
    (optimizer, variables); loss_fn() returns a tuple whose first len(players)
    elements are the players' per-example losses [B], in the players' order.
    Each loss is scaled and its gradients unscaled as in `minimize`. Returns
    what loss_fn returned (the losses before the update).

    gates (optional): a function of loss_fn's output that returns, per player,
    None (always update) or a boolean scalar, the same on every replica; a
    player whose gate is False keeps its weights and its optimizer's state
    (`apply_if`). With gates the return value ends with the list of the
    players' gates (True for None)."""
    with contextlib.ExitStack() as stack:
        tapes = [stack.enter_context(tf.GradientTape()) for _ in players]
        out = loss_fn()
        scaled = [optimizer.scale_loss(global_mean(l)) for (optimizer, _), l in zip(players, out)]
    # Inside a tf.function the backward graph holds only what each gradient
    # needs, so a tape recording the other players' losses costs no compute.
    grads = [tape.gradient(loss, variables) for tape, loss, (_, variables) in zip(tapes, scaled, players)]
    conditions = gates(out) if gates is not None else [None] * len(players)
    for (optimizer, variables), g, condition in zip(players, grads, conditions):
        if condition is None:
            optimizer.apply(g, variables)
        else:
            apply_if(optimizer, g, variables, condition)
    if gates is None:
        return out
    return (*out, [tf.constant(True) if c is None else c for c in conditions])


def _tf_variable(v):
    return v.value if isinstance(v, keras.Variable) else v


def apply_if(optimizer, grads, variables, condition):
    """optimizer.apply(grads, variables) when `condition` (a boolean scalar, the
    same on every replica) holds; otherwise the variables and the optimizer's
    own (its step count, its moments) stay as they were, as if it had not been
    called. The update is made and then undone, so no synchronisation point
    (the all-reduce of the gradients) sits inside control flow, which
    MirroredStrategy cannot run."""
    if not optimizer.built:  # its moments must exist before the snapshot, to be restored
        optimizer.build(variables)
    state = [_tf_variable(v) for v in list(variables) + list(optimizer.variables)]
    before = [tf.identity(v) for v in state]
    optimizer.apply(grads, variables)

    def keep_or_restore(var, keep, old):
        return var.assign(tf.where(keep, var, old))

    def restore(strategy, condition, before):
        for v, old in zip(state, before):
            strategy.extended.update(v, keep_or_restore, args=(condition, old), group=False)

    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        tf.distribute.get_replica_context().merge_call(restore, args=(condition, before))
    else:
        for v, old in zip(state, before):
            keep_or_restore(v, condition, old)


def all_reduced_mean(per_example):
    """The mean of `per_example` over the global batch, the same on every
    replica (an all-reduce of global_mean; in a cross-replica context
    `per_example` is the global batch already, and its mean is returned)."""
    if tf.distribute.get_replica_context() is None:
        return tf.reduce_mean(tf.cast(per_example, tf.float32))
    return all_reduced_sum(global_mean(per_example))


def all_reduced_sum(value):
    """The sum of `value` over the replicas, the same on every replica
    (`value` itself in a cross-replica context or on one device)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def step_seed(base_seed, step, stream):
    """A stateless seed [2] for one train step and one random stream of it."""
    return tf.stack(
        [tf.cast(base_seed, tf.int64) * 1000 + stream, tf.cast(step, tf.int64)]
    )


def replica_slice(draw, batch_size):
    """This replica's rows of `draw(global_batch)`, global_batch = batch_size * N.

    `draw` makes a stateless random draw for the whole global batch (a tensor
    with global_batch rows); every replica makes the same draw and keeps its own
    slice, so N replicas together use exactly what one device would use for the
    whole batch (and no two replicas share a draw). Needs equal per-replica
    batches: training pipelines drop the remainder."""
    ctx = tf.distribute.get_replica_context()
    n = num_replicas()
    replica = ctx.replica_id_in_sync_group if ctx is not None else 0
    values = draw(batch_size * n)
    return values[replica * batch_size : (replica + 1) * batch_size]


def replica_normal(batch_size, dim, seed):
    """N(0, I) noise [batch_size, dim] for this replica: its slice of one draw
    [batch_size * N, dim] for the global batch (replica_slice)."""
    return replica_slice(lambda n: tf.random.stateless_normal([n, dim], seed), batch_size)


def replica_seed(seed):
    """Folds this replica's id into a stateless seed (distinct noise per replica)."""
    ctx = tf.distribute.get_replica_context()
    replica = ctx.replica_id_in_sync_group if ctx is not None else 0
    return tf.random.experimental.stateless_fold_in(seed, replica)


def to_tanh(images):
    """[0, 1] images (the zoo's range) -> [-1, 1] (what tanh generators emit)."""
    return 2.0 * tf.cast(images, tf.float32) - 1.0


def from_tanh(x):
    """[-1, 1] -> [0, 1]."""
    return (tf.cast(x, tf.float32) + 1.0) / 2.0


def unpack(data):
    """(images, labels or None) from what fit/evaluate pass to train_step."""
    if isinstance(data, (tuple, list)):
        images = data[0]
        labels = data[1] if len(data) > 1 else None
    else:
        images, labels = data, None
    return tf.cast(images, tf.float32), labels


# ---------------------------------------------------------------------------


class MultiOptimizer:
    """Compile plumbing of a model with several optimizers (GANs, AAE, BiGAN).
    The model names them in `optimizer_names` (`step_optimizer`, default the
    first, becomes Keras' `model.optimizer`: its iterations count train steps), maps each to
    its variables in `optimizer_variables()` and gives the defaults in
    `compile_defaults()`; its compile(...) calls compile_optimizers. Every
    optimizer is an attribute of the model, so .keras files and
    tf.train.Checkpoint(model) hold their state. Under the mixed_float16 policy
    each is wrapped in a LossScaleOptimizer: the model's steps take gradients of
    optimizer.scale_loss(loss), which optimizer.apply unscales."""

    optimizer_names = ()  # the one declaration of the optimizers' names
    step_optimizer = None
    optimizer_alias = None  # the optimizer that compile(optimizer=...) sets, if any

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.optimizer_names:
            setattr(self, name, None)  # until compile

    def compile(self, optimizer=None, **kwargs):
        """compile(<name>=optimizer for each name of `optimizer_names`, ...):
        each optimizer given, or compile_defaults()'s where None, is built on
        its variables (compile inside a strategy's scope: their variables are
        created here); the other keyword arguments (run_eagerly, jit_compile,
        steps_per_execution) go to keras.Model.compile."""
        given = {name: kwargs.pop(name, None) for name in self.optimizer_names}
        if optimizer is not None:
            if self.optimizer_alias is None:
                raise ValueError(
                    f"{type(self).__name__}.compile takes {', '.join(self.optimizer_names)}, not optimizer="
                )
            given[self.optimizer_alias] = given[self.optimizer_alias] or optimizer
        self.compile_optimizers(given, **kwargs)

    def compile_optimizers(self, given, **kwargs):
        """Sets each named optimizer (given, or the default where None), builds it
        on its variables and runs Keras' compile."""
        defaults = None
        for name in self.optimizer_names:
            optimizer = given.get(name)
            if optimizer is None:
                defaults = defaults or self.compile_defaults()
                optimizer = defaults[name]
            optimizer = keras.optimizers.get(optimizer)
            if self.dtype_policy.name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            setattr(self, name, optimizer)
        if len({id(getattr(self, name)) for name in self.optimizer_names}) < len(self.optimizer_names):
            raise ValueError(f"{', '.join(self.optimizer_names)} must be distinct optimizer objects")
        kwargs.setdefault("auto_scale_loss", False)  # the steps scale their own losses
        step = self.step_optimizer or self.optimizer_names[0]
        keras.Model.compile(self, optimizer=getattr(self, step), **kwargs)
        variables = self.optimizer_variables()
        if set(variables) != set(self.optimizer_names):  # a model's two declarations disagree
            raise TypeError(f"{type(self).__name__}.optimizer_variables() names {sorted(variables)}, "
                            f"not its optimizer_names {list(self.optimizer_names)}")
        for name in self.optimizer_names:
            getattr(self, name).build(variables[name])

    def get_compile_config(self):
        """Keras' compile config with every optimizer serialized under its own name."""
        config = keras.Model.get_compile_config(self)
        if not config:
            return config
        config.pop("optimizer", None)
        for name in self.optimizer_names:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    def optimizer_list(self):
        """Every optimizer this model steps (train.run checkpoints them)."""
        return [getattr(self, name) for name in self.optimizer_names]


# The nets whose steps XLA speeds up on a CPU, so --jit_compile=auto compiles
# them there (train.benchmark --xla_vs_plain, docs/benchmarks.md): it fuses the
# autoencoders' (ae, vae, cvae, aae) conv step, 1.5-1.7x the images/s of the
# plain step on 2 cores, and the adversarial models' (gan, cgan, dcgan, bigan)
# steps of either net, 1.3-1.7x, since their dropout masks are integer hashes
# (zoo.layers.keep_mask): with tf.random's draws XLA made them 0.4-0.6x.
AUTOENCODER_NETS_XLA_SPEEDS_UP = ("conv",)
ADVERSARIAL_NETS_XLA_SPEEDS_UP = ("mlp", "conv")


class ZooModel(keras.Model):
    """Base of every zoo model: built from (image_shape, num_classes, config).

    Subclasses set `Config` (a dataclass of their options), `conditional` and
    `signature_names`, and implement the methods their signatures name."""

    Config = None
    conditional = False
    # What the model can do beyond generate (see CAPABILITIES): each class and
    # mixin declares its own, and can() joins those of the whole MRO; train/,
    # export/ and the tests read them through can() and zoo.names(capability),
    # never by probing for methods.
    capabilities = frozenset()
    signature_names = ("generate",)
    tracked = ()  # names of the loss terms tracked as keras.metrics.Mean
    # How many minibatches of data one train_step consumes: its batch holds
    # this many (train.run batches this many times --batch_size rows).
    real_batches_per_step = 1
    # What train.run uses where the user gives no flag (training_defaults_for
    # adds lr_decay "none" where a model's dict does not name one).
    training_defaults = {"epochs": 10, "batch_size": 64, "learning_rate": 1e-3}

    @classmethod
    def can(cls, capability):
        """Whether models of this class have `capability` (one of CAPABILITIES)."""
        if check_capability(capability) == "conditional":
            return bool(cls.conditional)
        return any(capability in vars(k).get("capabilities", ()) for k in cls.__mro__)

    @property
    def uses_average(self):
        """True when generate (and encode, decode) use averaged weights."""
        return False

    @classmethod
    def training_defaults_for(cls, options):
        """training_defaults of a model built with `options` (a Config's fields
        as a dict): what train.run uses, and what compile_defaults() gives
        without a learning_rate. A model whose defaults depend on an option
        overrides it."""
        return {"lr_decay": "none", **cls.training_defaults}

    # Whether XLA makes this model's train step faster on a CPU, for
    # --jit_compile=auto (train/compiler.py): measured per model, since it
    # differs both ways (docs/benchmarks.md).
    xla_pays_on_cpu_nets = ()

    @classmethod
    def xla_pays_on_cpu(cls, options):
        """Whether a model built with `options` (a Config's fields as a dict)
        trains faster with XLA on a CPU: its `net` is one of xla_pays_on_cpu_nets."""
        return {**dataclasses.asdict(cls.Config()), **options}.get("net") in cls.xla_pays_on_cpu_nets

    def __init__(self, image_shape, num_classes=0, seed=0, **kwargs):
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_KWARGS if k in kwargs}
        super().__init__(**keras_kwargs)
        valid = [f.name for f in dataclasses.fields(self.Config)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no option {', '.join(unknown)}; "
                f"valid options: {', '.join(valid)}"
            )
        self.config = self.Config(**kwargs)
        check_choices(self.config)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
        self.num_classes = int(num_classes)
        if self.conditional and self.num_classes < 2:
            raise ValueError(
                f"{type(self).__name__} is conditional and needs num_classes >= 2, got {num_classes}"
            )
        self.seed = int(seed)
        self.latent_dim = self.latent_size()
        self._trackers = {n: keras.metrics.Mean(name=n) for n in self.tracked}

    def latent_size(self):
        """J, the size of the z that generate reads: the Config's latent_dim (a
        model whose z is made of parts overrides it; it may read the config,
        image_shape and num_classes)."""
        return int(getattr(self.config, "latent_dim", 0))

    # -- config -------------------------------------------------------------
    def get_config(self):
        base = super().get_config()
        return {
            **{k: base[k] for k in KERAS_KWARGS if k in base},
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "seed": self.seed,
            **dataclasses.asdict(self.config),
        }

    # Options whose default changed after models were saved without them: a
    # saved config that lacks such a key gets the value it was trained with.
    legacy_options = {}

    @classmethod
    def saved_options(cls, options):
        """`options` of a saved model (config.json, .keras) with legacy_options filled in."""
        return {**cls.legacy_options, **options}

    @classmethod
    def from_config(cls, config):
        return cls(**cls.saved_options(config))

    # -- metrics ------------------------------------------------------------
    def track(self, **values):
        """Updates the trackers with per-example (or scalar) values; returns all results."""
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return list(self._trackers.values())

    # -- labels and images --------------------------------------------------
    def one_hot(self, labels):
        return tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)

    def require_labels(self, labels):
        if self.conditional and labels is None:
            raise ValueError(
                f"{type(self).__name__} is conditional: pass labels "
                f"(a dataset of (images, labels), or labels=...)"
            )
        return labels

    def noise(self, n_or_z, seed=None):
        """Standard-normal generator input: `n` rows drawn now, or `z` as given."""
        if isinstance(n_or_z, int):
            return keras.random.normal((n_or_z, self.latent_dim), seed=seed)
        return tf.cast(n_or_z, tf.float32)

    @staticmethod
    def as_labels(labels, n):
        labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)  # int64 from datasets too
        if labels.shape.rank == 0:
            labels = tf.fill([n], labels)
        return labels

    # -- serving ------------------------------------------------------------
    def spec(self, name):
        """The typed TensorSpec of a serving input (batch dimension None)."""
        return serving.spec(self, name)

    def serving_signatures(self):
        """{signature name: tf.function with a typed input_signature}, in order
        (the first is also served as `serving_default`): `signature_names`,
        then `sample` and `sample_png`. Each checks its inputs in the graph
        (zoo.serving)."""
        parts = {name: getattr(self, f"_serve_{name}")() for name in self.signature_names}
        parts.update(serving.sample_signatures(self))
        return {name: serving.signature(self, fn, inputs) for name, (fn, inputs) in parts.items()}

    def image_signature(self, method, input_name):
        """(fn, input names) for a signature that returns {"images": method(input[, labels])};
        conditional models also take labels."""
        if self.conditional:
            return (lambda x, labels: {"images": method(x, labels)}), (input_name, "labels")
        return (lambda x: {"images": method(x)}), (input_name,)

    def _serve_generate(self):
        return self.image_signature(self.generate, "z")

    def _serve_decode(self):
        return self.image_signature(self.decode, "z")

    def _serve_reconstruct(self):
        return self.image_signature(self.reconstruct, "images")

    def sample_inputs(self, n, seed=0):
        """A fixed batch of generator inputs (z, labels or None) for sample grids."""
        z = tf.random.stateless_normal([n, self.latent_dim], [seed, 0])
        labels = tf.range(n, dtype=tf.int32) % self.num_classes if self.conditional else None
        return z, labels

    def compile_defaults(self, learning_rate=None):
        """Keyword arguments for compile() that train.run uses."""
        lr = learning_rate or self.training_defaults_for(dataclasses.asdict(self.config))["learning_rate"]
        return {"optimizer": keras.optimizers.Adam(lr)}

    def train_steps_taken(self):
        """Train steps taken so far, from the step optimizer's iterations (a model
        whose step updates it several times divides)."""
        return self.optimizer.iterations

    # One optimizer, Keras' own, for every trainable variable; models with
    # several (base.MultiOptimizer) declare their names and variables.
    optimizer_names = ("optimizer",)

    def optimizer_variables(self):
        """{optimizer name: the variables it updates}."""
        return {"optimizer": self.trainable_variables}

    def optimizer_list(self):
        """Every optimizer this model steps (checkpointed by train.run)."""
        return [self.optimizer]
