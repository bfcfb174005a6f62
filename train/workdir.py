"""What keeps a workdir whole under crashes and concurrent use: the run's lock,
the history file (one well-formed row per completed epoch), finding a
checkpoint to resume from when the index is damaged, and removing what a
killed process left behind."""

import contextlib
import csv
import fcntl
import json
import glob
import os
import re
import shutil
import time

HISTORY = "history.csv"


class WorkdirError(Exception):
    """A one-line, actionable problem with a workdir."""



@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """A temporary path beside `path` (`path`.tmp + suffix, the suffix for
    writers that go by the extension) to write to; once the block ends
    without error it replaces `path` (os.replace: a reader or a crash sees the
    old file or the new one, never a part), and on error it is removed."""
    tmp = f"{path}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path, text):
    """Writes `text` to `path` atomically (atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def write_json(path, obj):
    """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def load_trained(workdir):
    """(model, config) of a finished train.run workdir: config.json and the
    model.keras it names, loaded by the commands that read runs (evaluate,
    explore, export). WorkdirError, one line, if either is missing,
    unreadable, names no zoo model, or the two disagree (a mixed-up workdir)."""
    import keras

    import zoo  # registers the model classes for load_model

    keras_path, config_path = os.path.join(workdir, "model.keras"), os.path.join(workdir, "config.json")
    if not (os.path.exists(keras_path) and os.path.exists(config_path)):
        raise WorkdirError(f"no trained model in {workdir} (model.keras or config.json missing); run train.run first")
    try:
        with open(config_path) as fh:
            config = json.load(fh)
        name = config["model"]
        cls = zoo.get(name)
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable, not JSON, `[]`, an unknown model
        raise WorkdirError(f"{config_path} names no zoo model ({type(e).__name__}: {str(e)[:120]}); "
                           f"restore it from the run or retrain with train.run") from None
    try:
        model = keras.models.load_model(keras_path)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, zip and h5 errors
        raise WorkdirError(
            f"cannot load {keras_path} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            f"it may be damaged or come from another version of the zoo: retrain it with train.run"
        ) from None
    if type(model) is not cls:
        raise WorkdirError(f"{config_path} names model {name} but {keras_path} holds a {type(model).__name__}; "
                           f"the workdir is mixed up: retrain with train.run in a new --workdir")
    return model, config


class Lock:
    """An exclusive OS lock on <directory>/<name>, held while the context is
    open. The kernel releases it when the process dies, so kill -9 leaves no
    stale lock. wait=False: raises WorkdirError naming the holder's PID at once."""

    def __init__(self, directory, name=".lock", what="train.run", wait=False):
        self.path = os.path.join(directory, name)
        self.what = what
        self.wait = wait
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise WorkdirError(
                f"{os.path.dirname(self.path)} is in use by another {self.what} (pid {holder}); "
                f"wait for it to finish, or use another directory"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the lock
        self.fd = None


def write_failure(error):
    """The reason of a failed write (an OSError or a TF OpError: disk full, a
    size limit, read-only), short enough for a one-line error."""
    return str(getattr(error, "message", error)).strip().splitlines()[0].split("; ")[-1][:120]


# ---------------------------------------------------------------------------
# history.csv


def read_history(workdir):
    """(header, rows) of the well-formed rows of history.csv: as many fields as
    the header and an integer epoch. ([], []) without a file."""
    path = os.path.join(workdir, HISTORY)
    if not os.path.exists(path):
        return [], []
    with open(path, newline="") as fh:
        lines = list(csv.reader(fh))
    if not lines or not lines[0] or lines[0][0] != "epoch":
        return [], []
    header, rows = lines[0], []
    for row in lines[1:]:
        if len(row) == len(header) and re.fullmatch(r"\d+", row[0]):
            rows.append(row)
    return header, rows


def write_history(workdir, header, rows):
    """Replaces history.csv atomically (a kill leaves the old or the new file)."""
    with atomic_path(os.path.join(workdir, HISTORY)) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def repair_history(workdir, completed_epochs):
    """Keeps exactly one well-formed row per completed epoch 0..completed_epochs-1
    (the last row written for an epoch wins; rows of epochs the checkpoint does
    not hold are dropped, as those epochs train again). Returns the epochs kept."""
    header, rows = read_history(workdir)
    if not header:
        return 0
    by_epoch = {int(r[0]): r for r in rows if int(r[0]) < completed_epochs}
    write_history(workdir, header, [by_epoch[e] for e in sorted(by_epoch)])
    return len(by_epoch)


def history_epochs(workdir):
    """How many epoch rows history.csv holds."""
    return len(read_history(workdir)[1])


def trained_without_checkpoint(workdir):
    """Whether history.csv proves that a checkpoint existed: a row of epoch 1 or
    later (epoch k > 0 runs only after epoch k-1 was checkpointed). A row of
    epoch 0 alone is what a kill between its row and its first checkpoint
    leaves (callbacks.History writes the row first), so it proves nothing."""
    return any(int(row[0]) >= 1 for row in read_history(workdir)[1])


def set_history_aside(workdir):
    """Renames history.csv to history.before-restart-<time>.csv; returns the new path."""
    path = os.path.join(workdir, HISTORY)
    aside = os.path.join(workdir, f"history.before-restart-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    os.replace(path, aside)
    return aside


# ---------------------------------------------------------------------------
# checkpoints


def checkpoint_files(checkpoint_dir):
    """Prefixes of the checkpoints whose files are present (ckpt-N with its
    .index), newest (largest N) first, whatever the `checkpoint` index says."""
    found = []
    for index in glob.glob(os.path.join(checkpoint_dir, "ckpt-*.index")):
        match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
        if match:
            found.append((int(match.group(1)), index[: -len(".index")]))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def remove_leftovers(checkpoint_dir):
    """Removes the ckpt-*_temp directories a killed save left; returns them."""
    stale = [d for d in glob.glob(os.path.join(checkpoint_dir, "ckpt-*_temp*")) if os.path.isdir(d)]
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return stale
