"""Keras callbacks of a training run: sample grids, checkpoints and the NaN guard."""

import math
import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from train import workdir


def image_grid(images, columns=None):
    """[N, H, W, C] in [0, 1] -> one uint8 image [rows*H, cols*W, C] with 1-pixel gaps."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones(((h + 1) * rows + 1, (w + 1) * columns + 1, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = image
    return (grid * 255).round().astype(np.uint8)


def save_png(path, grid, scale=1):
    """Writes a uint8 grid [H, W, C] (C = 1 or 3) as PNG, enlarged `scale` times."""
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with workdir.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


class SampleGrid(keras.callbacks.Callback):
    """After each epoch, writes samples/epoch_NNNN.png (and a TensorBoard image)
    from one fixed batch of generator inputs, so the progression is visible."""

    def __init__(self, directory, inputs, tensorboard_dir=None, write=True):
        super().__init__()
        self.directory = directory
        self.z, self.labels = inputs
        self.write = write
        self.writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir and write else None

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        images = np.asarray(self.model.generate(self.z, labels=self.labels))
        os.makedirs(self.directory, exist_ok=True)
        grid = image_grid(images)
        scale = max(1, 480 // grid.shape[0])  # readable in a browser
        save_png(os.path.join(self.directory, f"epoch_{epoch + 1:04d}.png"), grid, scale)
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.image("samples", grid[None].astype(np.float32) / 255.0, step=epoch + 1)
            self.writer.flush()


class NonFiniteLoss(RuntimeError):
    """A tracked loss became NaN or inf."""


class Terminated(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint."""


class WriteError(RuntimeError):
    """A checkpoint could not be written (disk full, a file size limit, a
    read-only directory); the previous checkpoint is intact."""


LR_DECAYS = ("none", "linear", "cosine")


def lr_decay_factor(kind, t):
    """The learning rate's multiplier once a fraction t in [0, 1] of training's
    steps is done: "none" 1; "linear" 1 - t; "cosine" (1 + cos(pi t)) / 2, SGDR's
    schedule without restarts (Loshchilov and Hutter 2017)."""
    t = min(max(float(t), 0.0), 1.0)
    if kind == "none":
        return 1.0
    if kind == "linear":
        return 1.0 - t
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown learning-rate decay {kind!r}; choose one of {', '.join(LR_DECAYS)}")


class LearningRateDecay(keras.callbacks.Callback):
    """Before each train step, sets every optimizer's learning rate to its
    initial rate times lr_decay_factor(kind, step / total_steps). The rate is a
    function of the step alone, so a resumed run goes on with the schedule
    where its checkpoint stopped. `step` is the number of steps already trained."""

    def __init__(self, optimizers, initial_rates, kind, total_steps, step):
        super().__init__()
        lr_decay_factor(kind, 0.0)  # an unknown kind fails here, before training
        self.optimizers = list(optimizers)
        self.initial_rates = [float(r) for r in initial_rates]
        self.kind = kind
        self.total_steps = max(int(total_steps), 1)
        self.step = int(step)

    def on_train_batch_begin(self, batch, logs=None):
        factor = lr_decay_factor(self.kind, self.step / self.total_steps)
        for optimizer, rate in zip(self.optimizers, self.initial_rates):
            optimizer.learning_rate = rate * factor

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class Checkpoint(keras.callbacks.Callback):
    """Saves model, optimizers, the epoch counter and the step counter (batches
    trained in all) at the end of each epoch, and mid-epoch when SIGTERM asked
    the run to stop (`terminate()`); then fit returns and the caller raises
    Terminated. A resumed run skips the batches of the epoch already trained.
    With several workers, `any_worker(flag)` (train.distribute.any_worker)
    tells after every batch whether SIGTERM reached any of them, so that they
    all stop after the same batch and save together.

    If a tracked value is NaN/inf at an epoch's end, training stops with
    NonFiniteLoss and the last good checkpoint is left as it is.
    tf.train.CheckpointManager writes the files first and the `checkpoint`
    index last, so a crash while saving leaves the previous checkpoint the one
    restored."""

    def __init__(self, manager, epoch_var, step_var, steps_per_epoch, any_worker=None):
        super().__init__()
        self.any_worker = any_worker
        self.manager = manager
        self.epoch_var = epoch_var
        self.step_var = step_var
        self.steps_per_epoch = steps_per_epoch
        self.step = int(step_var.numpy())
        self.terminated = False

    def terminate(self, *_):
        """Signal handler: stop after the current batch and save."""
        self.terminated = True

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.any_worker is not None and self.any_worker(self.terminated):
            self.terminated = True  # never cleared here: the signal may arrive during the call
        if self.terminated:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not np.isfinite(float(v))}
        if bad:
            self.model.stop_training = True
            name, value = next(iter(bad.items()))
            last = self.manager.latest_checkpoint
            advice = (
                f"the last good checkpoint {last} is kept; use a lower --learning_rate in a new --workdir"
                if last
                else "no checkpoint was written; rerun with a lower --learning_rate"
            )
            raise NonFiniteLoss(
                f"{name} became {value} in epoch {epoch + 1} (step {self.step}) and nothing of "
                f"this epoch was saved; {advice}, or check the data"
            )
        if self.step >= (epoch + 1) * self.steps_per_epoch:  # the epoch is complete
            self.epoch_var.assign(epoch + 1)
        self.step_var.assign(self.step)
        try:
            self.manager.save(checkpoint_number=self.step)
        except (OSError, tf.errors.OpError) as e:  # the index is written last: the previous one holds
            self.model.stop_training = True
            raise WriteError(
                f"cannot write the checkpoint of step {self.step} in {self.manager.directory} ({workdir.write_failure(e)}); "
                f"free disk space or fix permissions, then rerun the same command to resume from "
                f"{self.manager.latest_checkpoint or 'the start'}"
            ) from None


class History(keras.callbacks.Callback):
    """history.csv in `directory`: one row per completed epoch ("epoch" and the
    epoch's logs, columns sorted as Keras's CSVLogger has them), the file
    replaced atomically each time (train.workdir), so a kill never leaves half
    a row. Put it before the Checkpoint callback `guard`: a row is then written
    before its epoch's checkpoint, and a crash between the two leaves a row that
    the resumed run replaces (train.workdir.repair_history). An epoch cut short
    (SIGTERM) or with a non-finite loss (the guard stops there) gets no row."""

    def __init__(self, directory, guard):
        super().__init__()
        self.directory = directory
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.step < (epoch + 1) * self.guard.steps_per_epoch:
            return  # incomplete: the resumed run finishes it and writes its row
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if not all(np.isfinite(list(logs.values()))):
            return  # the guard stops the run and keeps the last good checkpoint: no row for this epoch
        header, rows = workdir.read_history(self.directory)
        header = header or ["epoch", *sorted(logs)]
        row = [str(epoch)] + [repr(logs[k]) if k in logs else "" for k in header[1:]]
        workdir.write_history(self.directory, header, [r for r in rows if int(r[0]) != epoch] + [row])
