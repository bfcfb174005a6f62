"""Train a zoo model: python -m train.run --model=vae [--dataset=mnist5k] ...

Every model option (the fields of the models' Configs, e.g. --latent_dim,
--net, --loss) is a flag; --flagfile works as in every absl program. Rerunning
the same command resumes from the workdir's last checkpoint.
"""

import dataclasses
import functools
import json
import math
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from train import cli  # noqa: E402
from train import callbacks, compiler, data, distribute, precision  # noqa: E402
from train import workdir as workdirs  # noqa: E402

FLAGS = flags.FLAGS
TRAINING = ("epochs", "batch_size", "learning_rate", "lr_decay")


def _model_option_fields():
    """{option: [(model name, its Config's field)]}: the union of the registered Configs."""
    fields = {}
    for name in zoo.names():
        for field in dataclasses.fields(zoo.get(name).Config):
            fields.setdefault(field.name, []).append((name, field))
    return fields


# Read once, at import: resolve() reads exactly the options that define_flags() makes flags of.
_OPTION_FIELDS = _model_option_fields()
MODEL_OPTIONS = tuple(_OPTION_FIELDS)


@functools.cache  # once per process: tests parse several command lines
def define_flags():
    """The command's flags, defined when it runs as a program (and by tests that
    parse its command lines), not on import, so that any program can import this
    module, as train.evaluate, train.explore and export.run define theirs. One
    flag per model option; an option that several models have lists which
    models take it (and their choices)."""
    flags.DEFINE_string("model", "vae", f"model to train: {', '.join(zoo.names())}")
    flags.DEFINE_string("dataset", "mnist5k", f"{', '.join(data.OFFLINE)} (offline), {data.FOLDER}PATH (the images "
                        f"under PATH, labelled by subfolder when there are two or more) or a tfds image dataset")
    flags.DEFINE_integer("image_size", None, "resize (and centre-crop) images to this square size (default: the "
                         f"dataset's; {data.FOLDER}PATH and celeb_a: {data.FOLDER_IMAGE_SIZE})")
    flags.DEFINE_integer("channels", None, "1 (grey) or 3 (colour) (default: the dataset's; a folder's is 3 unless "
                         "every image is grey)")
    flags.DEFINE_float("test_fraction", data.TEST_FRACTION, f"{data.FOLDER}PATH: the share of images held out for "
                       "evaluation (chosen by a hash of each file's path, so adding files moves no other)")
    flags.DEFINE_string("data_cache_dir", None, f"where folders and tfds sets are cached as uint8 (default: "
                        f"{data.CACHE_DIR})")
    flags.DEFINE_integer("epochs", None, "epochs to train in all (default: the model's)")
    flags.DEFINE_integer("batch_size", None, "global batch size (default: the model's)")
    flags.DEFINE_float("learning_rate", None, "learning rate (default: the model's)")
    flags.DEFINE_enum("lr_decay", None, callbacks.LR_DECAYS, "decay every optimizer's learning rate over the "
                      "run's --epochs, to 0 at the end (default: the model's)")
    flags.DEFINE_integer("steps_per_epoch", None, "cut epochs short (for smoke runs)")
    flags.DEFINE_string("workdir", None, "where the run lives (default: runs/<model>-<dataset>)")
    flags.DEFINE_integer("seed", 0, "seed of weights, noise and data order")
    flags.DEFINE_bool("deterministic", False, "deterministic ops: a resumed run ends with the weights of an uninterrupted one")
    flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES, "tf.distribute strategy")
    flags.DEFINE_integer("keep_checkpoints", 3, "how many checkpoints to keep")
    flags.DEFINE_enum("mixed_precision", "auto", precision.CHOICES, "bf16: mixed bfloat16 compute; fp16: mixed float16 "
                      "with dynamic loss scaling; auto: by the devices (GPUs of compute capability >= 8.0: bf16, older "
                      "GPUs: fp16; no GPU: bf16 where the CPU has bf16 units, AVX512-BF16 or AMX); off: float32")
    flags.DEFINE_enum("jit_compile", "auto", compiler.CHOICES, "compile the train step with XLA; auto: on GPUs only "
                      "(on CPUs it made the step slower)")
    flags.DEFINE_string("export_base", None, "also export the trained model for TF Serving under this base path")
    flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 bar, 2 a line per epoch")
    flags.DEFINE_float("max_minutes", None, "stop at the end of the first epoch that ends past this many minutes of training")
    flags.DEFINE_bool("track_fcd", False, "after every epoch, add the FCD of 500 samples (and its floor) to history.csv")
    flags.DEFINE_string("eval_cache_dir", None, "where --track_fcd caches its classifier (default: train.evaluate's)")
    flags.DEFINE_bool("restart", False, "start over in a workdir whose history has epochs but which has no checkpoint "
                      "(the old history.csv is renamed, never deleted)")
    for option_name, uses in _OPTION_FIELDS.items():
        field = uses[0][1]
        kind = field.type if isinstance(field.type, type) else type(field.default)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string
        )
        by_choices = {}
        for model_name, f in uses:
            by_choices.setdefault(f.metadata.get("choices"), []).append(model_name)
        where = "; ".join(
            f"{', '.join(models)}" + (f": {'|'.join(choices)}" if choices else "")
            for choices, models in by_choices.items()
        )
        define(option_name, None, f"model option: {field.metadata.get('help', '')} [{where}]")


class RunError(Exception):
    """A one-line, actionable error of the command line."""


def parse_flags(argv):
    """absl's parser, with unknown options reported on one line listing the valid ones."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        valid = sorted(n for n in FLAGS if not n.startswith("help") and len(n) > 1)
        cli.fail(f"{e}; valid options: --{', --'.join(valid)}")


def resolve(flag_values=None):
    """The run's configuration from the flags and, on resume, the workdir's config.json."""
    f = flag_values or FLAGS
    try:
        cls = zoo.get(f.model)
    except ValueError as e:
        raise RunError(str(e)) from None
    valid = {field.name for field in dataclasses.fields(cls.Config)}
    given = {n: f[n].value for n in MODEL_OPTIONS if f[n].present}
    wrong = sorted(set(given) - valid)
    if wrong:
        raise RunError(
            f"--{wrong[0]} is not an option of model {f.model}; its options: --{', --'.join(sorted(valid))}"
        )
    workdir = f.workdir or os.path.join("runs", f"{f.model}-{data.short_name(f.dataset)}")
    model_options = {**dataclasses.asdict(cls.Config()), **given}
    defaults = cls.training_defaults_for(model_options)
    training = {k: f[k].value if f[k].value is not None else defaults[k] for k in TRAINING}
    check_training(training)
    config = {
        "model": f.model,
        "dataset": data.canonical(f.dataset),
        "image_size": f.image_size,
        "channels": f.channels,
        "test_fraction": f.test_fraction,
        "data_cache_dir": f.data_cache_dir,
        "seed": f.seed,
        "model_options": model_options,
        "training": training,
    }
    saved_path = os.path.join(workdir, "config.json")
    if os.path.exists(saved_path):
        config = _merge_saved(saved_path, config, f)
    return workdir, config


def check_training(training):
    """RunError for --epochs, --batch_size, --learning_rate or --lr_decay that cannot train."""
    if training["epochs"] < 1:
        raise RunError(f"--epochs={training['epochs']} must be at least 1 (it counts all epochs, resumed ones too)")
    if training["batch_size"] < 1:
        raise RunError(f"--batch_size={training['batch_size']} must be at least 1")
    lr = training["learning_rate"]
    if not (math.isfinite(lr) and lr > 0):
        raise RunError(f"--learning_rate={lr} must be a finite number > 0 (omit it for the model's default)")
    if training["lr_decay"] not in callbacks.LR_DECAYS:
        raise RunError(f"--lr_decay={training['lr_decay']} is not one of {', '.join(callbacks.LR_DECAYS)}")


def _has_checkpoint(workdir):
    return tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")) is not None


def _merge_saved(path, config, f):
    """The saved config, checked against the flags the user set explicitly
    (only --epochs may change, to train further)."""
    try:
        with open(path) as fh:
            saved = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is unreadable ({e}); restore it or use a new --workdir") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("training"), dict):
        raise RunError(f"{path} is not a train.run config (no model and training settings); "
                       f"restore it or use a new --workdir")
    if saved.get("model") != config["model"]:
        raise RunError(
            f"{os.path.dirname(path)} holds a {saved.get('model')} run, not {config['model']}; "
            f"use --model={saved.get('model')} to resume it or a new --workdir"
        )
    if not _has_checkpoint(os.path.dirname(path)):
        return config  # nothing trained yet: the new options replace the old ones
    saved["model_options"] = zoo.get(saved["model"]).saved_options(saved.get("model_options", {}))
    saved["training"].setdefault("lr_decay", "none")  # runs saved before --lr_decay trained without
    explicit = {key: f[key].present for key in ("dataset", "image_size", "channels", "test_fraction", "seed")}
    for key, present in explicit.items():
        if present and saved.get(key) != config[key]:
            raise RunError(_mismatch(path, key, saved.get(key), config[key]))
    for key in MODEL_OPTIONS:
        if f[key].present and saved["model_options"].get(key) != config["model_options"].get(key):
            raise RunError(_mismatch(path, key, saved["model_options"].get(key), config["model_options"][key]))
    for key in ("batch_size", "learning_rate", "lr_decay"):
        if f[key].present and saved["training"].get(key) != config["training"][key]:
            raise RunError(_mismatch(path, key, saved["training"].get(key), config["training"][key]))
    if f["epochs"].present:
        saved["training"]["epochs"] = config["training"]["epochs"]
    if f["data_cache_dir"].present:  # a cache may move: it is rebuilt where it is missing
        saved["data_cache_dir"] = config["data_cache_dir"]
    return saved


def _mismatch(path, key, old, new):
    return (
        f"{os.path.dirname(path)} was trained with --{key}={old}, not {new}; "
        f"rerun with the same options to resume, or use a new --workdir"
    )


def resolve_precision(config, flag):
    """--mixed_precision, or on resume without the flag the precision the run was trained in."""
    saved = config.get("dtype_policy")
    if flag.present and saved and (flag.value == "fp16") != (saved == "mixed_float16") and flag.value != "auto":
        # fp16 wraps every optimizer in a LossScaleOptimizer: the checkpoints' keys differ
        raise RunError(f"this run was trained in {saved}; resume it without --mixed_precision (or with the "
                       f"precision it was trained in), or start a new --workdir for --mixed_precision={flag.value}")
    if flag.present or "dtype_policy" not in config:
        return flag.value
    return {policy: choice for choice, policy in precision.POLICIES.items()}.get(config["dtype_policy"], "off")


def build_model(config, image_shape, num_classes):
    return zoo.build(
        config["model"],
        image_shape=image_shape,
        num_classes=num_classes,
        seed=config["seed"],
        **config["model_options"],
    )


def restores_dtype_policy(fn):
    """`fn`, leaving Keras's global dtype policy as it found it: a run sets the
    policy it trains in, and a script that trains in-process builds its next
    models in its own."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        before = keras.config.dtype_policy()
        try:
            return fn(*args, **kwargs)
        finally:
            keras.config.set_dtype_policy(before)

    return wrapped


@restores_dtype_policy
def train(
    workdir,
    config,
    steps_per_epoch=None,
    strategy_name="default",
    export_base=None,
    keep_checkpoints=3,
    mixed_precision="auto",
    jit_compile="auto",
    deterministic=False,
    verbose=1,
    max_minutes=None,
    track_fcd=False,
    eval_cache_dir=None,
    restart=False,
):
    """Trains (or resumes) the run in `workdir`; returns the trained model."""
    check_paths_and_counts(workdir, export_base, keep_checkpoints, steps_per_epoch)
    try:  # first: a multi-worker strategy configures the runtime before other TF work
        strategy = distribute.strategy(strategy_name)
    except ValueError as e:
        raise RunError(str(e)) from None
    if max_minutes is not None and strategy_name == "multi_worker":
        raise RunError("--max_minutes cannot be used with --strategy=multi_worker (workers would "
                       "disagree on when to stop); use --epochs")
    try:
        dataset = data.load_config(config)
    except data.DatasetError as e:
        raise RunError(str(e)) from None
    if track_fcd and not dataset.num_classes:
        raise RunError(f"--track_fcd measures the FCD with a classifier of the labels, and {config['dataset']} "
                       f"has none (a folder needs one subfolder per class); leave --track_fcd out")
    batch_size = config["training"]["batch_size"]
    if not 1 <= batch_size <= len(dataset.train_images):
        raise RunError(f"--batch_size={batch_size} must be between 1 and the {len(dataset.train_images)} "
                       f"train images of {config['dataset']}")
    clock = None
    if max_minutes is not None or track_fcd:
        from train import evaluate

        # Before seeding the run: a classifier trained for the FCD reseeds the RNGs.
        clock = evaluate.QualityClock(dataset, eval_cache_dir or evaluate.CACHE_DIR, seed=config["seed"],
                                      max_minutes=max_minutes, track_fcd=track_fcd)
    keras.utils.set_random_seed(config["seed"])
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        policy = precision.apply(mixed_precision, replicas=strategy.num_replicas_in_sync)
        jit, why = compiler.decide(jit_compile, replicas=strategy.num_replicas_in_sync,
                                   pays_on_cpu=zoo.get(config["model"]).xla_pays_on_cpu(config["model_options"]))
    except ValueError as e:
        raise RunError(str(e)) from None
    if jit:
        logging.warning("jit_compile: the train step is compiled with XLA (%s)", why)
    writer = distribute.is_chief(strategy)
    out_dir = workdir if writer else distribute.scratch_dir(workdir)
    config = {
        **config,
        "training": {"lr_decay": "none", **config["training"]},  # configs written before --lr_decay
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,  # the name of label i
        "dtype_policy": policy,
    }
    run = Run(workdir, out_dir, writer, strategy, dataset, config, steps_per_epoch, export_base,
              keep_checkpoints, verbose, clock, restart, jit)
    try:
        if not writer:
            return _train(run)
        os.makedirs(out_dir, exist_ok=True)
        with workdirs.Lock(out_dir):  # held for the run; the kernel drops it if the process dies
            return _train(run)
    finally:
        if not writer:
            distribute.remove_scratch(out_dir)


def check_paths_and_counts(workdir, export_base, keep_checkpoints, steps_per_epoch):
    """RunError, before anything is written, for counts that cannot work and for
    a workdir or export base that is a file or cannot be written."""
    if keep_checkpoints < 1:
        raise RunError(f"--keep_checkpoints={keep_checkpoints} must be at least 1 (resuming needs a checkpoint)")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise RunError(f"--steps_per_epoch={steps_per_epoch} must be at least 1 (or omit it for whole epochs)")
    for flag, path in (("workdir", workdir), ("export_base", export_base)):
        if path is None:
            continue
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunError(f"--{flag}={path} is a file, not a directory; pass a directory")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(os.path.abspath(existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunError(f"--{flag}={path} cannot be written ({existing} is read-only for this user); "
                           f"pass a directory you can write")


def _restore(checkpoint, manager, checkpoint_dir, writer):
    """Restores the newest checkpoint that restores: the index's latest, else
    (an unreadable or lost index) the newest ckpt-N whose files are there.
    Returns its path or None (nothing to resume); RunError if there are
    checkpoints and none restores."""
    latest = manager.latest_checkpoint if writer else tf.train.latest_checkpoint(checkpoint_dir)
    candidates = ([latest] if latest else []) + [
        p for p in workdirs.checkpoint_files(checkpoint_dir) if p != latest]
    errors = []
    for prefix in candidates:
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as e:  # a corrupt or foreign checkpoint
            errors.append(f"{os.path.basename(prefix)}: {type(e).__name__}")
            continue
        if prefix != latest:
            logging.warning("the checkpoint index of %s is unreadable or stale; resuming from %s "
                            "(the newest checkpoint that restores)", checkpoint_dir, prefix)
        return prefix
    if candidates:
        raise RunError(
            f"cannot restore any checkpoint in {checkpoint_dir} ({'; '.join(errors[:3])}); "
            f"move the checkpoints/ folder away to start over, or use a new --workdir"
        )
    return None


@dataclasses.dataclass
class Run:
    """What the pieces of a training run share once the strategy and the data
    are there; `out_dir` is the workdir on the chief and a scratch directory on
    the other workers (`writer` is False there)."""

    workdir: str
    out_dir: str
    writer: bool
    strategy: object
    dataset: object
    config: dict
    steps_per_epoch: int = None
    export_base: str = None
    keep_checkpoints: int = 3
    verbose: int = 1
    clock: object = None
    restart: bool = False
    jit_compile: bool = False


def _train(run):
    """train() once the strategy and the data are there: build, restore, fit, finish."""
    os.makedirs(run.out_dir, exist_ok=True)
    model, rows = _build(run)
    rates = [float(opt.learning_rate.numpy()) for opt in model.optimizer_list()]  # before a checkpoint's decayed ones
    checkpoint, manager, epoch, step = _restore_state(run, model)
    steps_per_epoch = run.steps_per_epoch or len(run.dataset.train_images) // rows
    guard, grid, cbs = _callbacks(run, model, manager, epoch, step, steps_per_epoch, rates)
    _fit(run, model, rows, steps_per_epoch, epoch, step, guard, cbs)
    if guard.terminated:
        raise callbacks.Terminated(
            f"stopped by SIGTERM at step {guard.step} (epoch {int(epoch.numpy()) + 1}) after saving "
            f"{manager.latest_checkpoint}; rerun the same command to resume"
        )
    if run.writer:
        _finish(run, model, int(epoch.numpy()), grid)
    return model


def _build(run):
    """(the compiled model, rows of data per train step), or RunError for
    options that cannot build or batch it."""
    training = run.config["training"]
    replicas = run.strategy.num_replicas_in_sync
    if training["batch_size"] % replicas:
        raise RunError(
            f"--batch_size={training['batch_size']} (the global batch) does not split evenly over the "
            f"{replicas} replicas that train it; use a multiple of {replicas}"
        )
    with run.strategy.scope():
        try:
            model = build_model(run.config, run.dataset.image_shape, run.dataset.num_classes)
        except ValueError as e:
            raise RunError(str(e)) from None
    if model.can("semi_supervised") and model.labelled_count:
        try:
            model.set_labelled(*data.labelled_subset(
                run.dataset.train_images, run.dataset.train_labels, model.labelled_count,
                run.dataset.num_classes, seed=run.config["seed"]))
        except (ValueError, data.DatasetError) as e:
            raise RunError(str(e)) from None
    # A train step takes real_batches_per_step minibatches (GANs: one per D update).
    rows = training["batch_size"] * model.real_batches_per_step
    if rows > len(run.dataset.train_images):
        raise RunError(
            f"--batch_size={training['batch_size']}: a {run.config['model']} train step takes "
            f"{model.real_batches_per_step} minibatches ({rows} rows), more than the "
            f"{len(run.dataset.train_images)} train images; use a smaller --batch_size"
        )
    with run.strategy.scope():
        model.compile(**model.compile_defaults(training["learning_rate"]), jit_compile=run.jit_compile)
    return model, rows


def _restore_state(run, model):
    """(checkpoint, manager, epoch, step): the run's checkpointed state,
    restored from the newest checkpoint that restores; the chief then writes
    config.json and repairs the history to the restored epoch."""
    with run.strategy.scope():
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        optimizers = {f"optimizer_{i}": opt for i, opt in enumerate(model.optimizer_list())}
        checkpoint = tf.train.Checkpoint(model=model, epoch=epoch, step=step, **optimizers)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(run.out_dir, "checkpoints"), max_to_keep=run.keep_checkpoints
    )
    # Non-chief workers save into their scratch directory but resume from the chief's checkpoints.
    checkpoint_dir = os.path.join(run.out_dir if run.writer else run.workdir, "checkpoints")
    if run.writer:
        workdirs.remove_leftovers(checkpoint_dir)  # the lock is held: no save of ours is in progress
    latest = _restore(checkpoint, manager, checkpoint_dir, run.writer)
    if latest:
        logging.warning("resumed from %s at epoch %d", latest, int(epoch.numpy()))
    elif run.writer and workdirs.trained_without_checkpoint(run.out_dir):
        if not run.restart:
            raise RunError(
                f"{run.workdir} has a history of {workdirs.history_epochs(run.out_dir)} epochs but no checkpoint "
                f"to resume from; rerun with --restart to train from scratch (the old history is kept), "
                f"or use a new --workdir"
            )
        logging.warning("--restart: the old history is now %s", workdirs.set_history_aside(run.out_dir))
    if run.writer:  # only once the options built a model and any checkpoint restored
        workdirs.write_json(os.path.join(run.out_dir, "config.json"), run.config)
        workdirs.repair_history(run.out_dir, int(epoch.numpy()))
    try:
        distribute.check_agree(run.strategy, epoch=int(epoch.numpy()), step=int(step.numpy()))
    except ValueError as e:
        raise RunError(str(e)) from None
    return checkpoint, manager, epoch, step


def _callbacks(run, model, manager, epoch, step, steps_per_epoch, rates):
    """(the checkpoint guard, the sample grid, every callback of fit, in order);
    `rates`: the optimizers' initial learning rates, which --lr_decay scales."""
    guard = callbacks.Checkpoint(manager, epoch, step, steps_per_epoch,
                                 any_worker=distribute.any_worker(run.strategy))
    grid = callbacks.SampleGrid(
        os.path.join(run.out_dir, "samples"),
        model.sample_inputs(64, seed=run.config["seed"]),
        tensorboard_dir=os.path.join(run.out_dir, "tensorboard", "samples"),
        write=run.writer,
    )
    cbs = [run.clock] if run.clock is not None else []  # first: it adds minutes and fcd to the epoch's logs
    if run.writer:  # the row before its checkpoint (callbacks.History)
        cbs.append(callbacks.History(run.out_dir, guard))
    training = run.config["training"]
    if training["lr_decay"] != "none":
        cbs.append(callbacks.LearningRateDecay(model.optimizer_list(), rates, training["lr_decay"],
                                               training["epochs"] * steps_per_epoch, int(step.numpy())))
    cbs += [guard, grid]
    if run.writer:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(run.out_dir, "tensorboard"), write_graph=False))
    return guard, grid, cbs


def _fit(run, model, rows, steps_per_epoch, epoch, step, guard, cbs):
    """Trains from the restored (epoch, step) to the configured epochs: first
    the rest of an interrupted epoch, then whole epochs; stops early on SIGTERM
    (after a checkpoint) or when the clock's minutes are up."""
    epochs = run.config["training"]["epochs"]
    initial_epoch = int(epoch.numpy())
    done = int(step.numpy()) - initial_epoch * steps_per_epoch  # batches of this epoch already trained
    if not 0 <= done < steps_per_epoch:
        raise RunError(
            f"the checkpoint is at step {int(step.numpy())}, which epoch {initial_epoch + 1} of "
            f"{steps_per_epoch} steps cannot hold; rerun with the --steps_per_epoch and --batch_size of the run"
        )

    def fit(first_epoch, last_epoch, start_step, steps):
        ds = distribute.shard_by_data(data.training_pipeline(
            run.dataset.train_images, run.dataset.train_labels, rows,
            seed=run.config["seed"], start_step=start_step,
            end_step=start_step + steps + (last_epoch - first_epoch - 1) * steps_per_epoch,
        ))
        model.fit(ds, epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                  callbacks=cbs, verbose=run.verbose)

    previous = signal.signal(signal.SIGTERM, guard.terminate)
    try:
        if done and initial_epoch < epochs:  # finish the interrupted epoch first
            fit(initial_epoch, initial_epoch + 1, int(step.numpy()), steps_per_epoch - done)
            initial_epoch += 1
        out_of_time = run.clock is not None and run.clock.out_of_time()
        if initial_epoch < epochs and not guard.terminated and not out_of_time:
            fit(initial_epoch, epochs, initial_epoch * steps_per_epoch, steps_per_epoch)
        elif not guard.terminated and not out_of_time:
            logging.warning("%s is already trained for %d epochs", run.workdir, initial_epoch)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(run, model, epochs_done, grid):
    """On the chief after training: fits the latent samplers, saves model.keras
    and exports the SavedModel when asked."""
    if model.can("fitted_sampler"):
        error = model.try_fit_sampler(run.dataset.train_images, run.dataset.train_labels)
        if error:  # e.g. collapsed codes: keep the trained model; generate falls back to the prior
            logging.warning("could not fit the latent samplers to the codes (%s); generate uses the prior", error)
        elif epochs_done:  # the last grid drew from the sampler before this fit: show what generate gives
            grid.set_model(model)  # (fit, which sets it, does not run when the run was already trained)
            grid.on_epoch_end(epochs_done - 1)
    keras_path = os.path.join(run.out_dir, "model.keras")
    with workdirs.atomic_path(keras_path, ".keras") as tmp:
        model.save(tmp)
    if run.export_base:
        from export.saved_model import ExportError, export

        try:
            path = export(model, run.export_base, run.config["model"], class_names=run.config.get("class_names"))
        except ExportError as e:
            raise RunError(f"trained and saved {keras_path}, but {e}; export it with export.run") from None
        print(f"exported {path}")


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TF's own INFO lines drown the progress bar
    cli.no_positional_arguments(argv)
    try:
        workdir, config = resolve()
        train(
            workdir,
            config,
            steps_per_epoch=FLAGS.steps_per_epoch,
            strategy_name=FLAGS.strategy,
            export_base=FLAGS.export_base,
            keep_checkpoints=FLAGS.keep_checkpoints,
            mixed_precision=resolve_precision(config, FLAGS["mixed_precision"]),
            jit_compile=FLAGS.jit_compile,
            deterministic=FLAGS.deterministic,
            verbose=FLAGS.verbose,
            max_minutes=FLAGS.max_minutes,
            track_fcd=FLAGS.track_fcd,
            eval_cache_dir=FLAGS.eval_cache_dir,
            restart=FLAGS.restart,
        )
    except (RunError, callbacks.NonFiniteLoss, callbacks.WriteError, workdirs.WorkdirError) as e:
        cli.fail(e)
    except OSError as e:
        # disk full, a read-only or vanished directory: checkpoints and history are
        # written atomically, so the last good ones are intact
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        where = getattr(e, "filename", None)
        cli.fail(f"cannot write{' ' + where if where else ''} ({type(e).__name__}: {reason}); "
                 f"free disk space or fix permissions, then rerun the same command to resume from the last "
                 f"checkpoint")
    except callbacks.Terminated as e:
        print(str(e), file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    print(f"workdir: {workdir}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
