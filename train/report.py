"""The zoo's scoreboard: python -m train.report [--minutes=10] [--models=...]

Trains every registered model on mnist5k for the same budget of training
minutes (train.run --max_minutes: it stops at the end of the first epoch past
the budget), evaluates each run (train.evaluate) and writes docs/zoo.md: one
table row per model and a sample grid each. Every run records the FCD after
each of its epochs (train.run --track_fcd), so the table also gives the time
to quality: the training minutes until the FCD first came within 3x of the
real-vs-real floor. The same table replaces the one between the zoo-table
markers of README.md. Numbers come only from these runs; the file names the
commit and the machine they ran on.

--models=NAME,... runs only those and keeps the other rows of the existing
report (docs/zoo.json), each with the commit and budget it was measured at;
--nokeep starts the report afresh.

A model named NAME@off runs with --mixed_precision=off (float32); by default
the list adds dcgan@off beside dcgan where the CPU computes in bfloat16, so
the two precisions can be compared.
"""

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import zoo  # noqa: E402
from train import evaluate, precision  # noqa: E402

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUALITY_FACTOR = 3.0  # "time to quality": FCD within this factor of the floor
TABLE_BEGIN, TABLE_END = "<!-- zoo:table -->", "<!-- /zoo:table -->"


def define_flags():
    flags.DEFINE_float("minutes", 10.0, "training minutes per model (each run ends with the epoch that passes them)")
    flags.DEFINE_list("models", None, "models to run, NAME or NAME@off for float32 (default: all, plus dcgan@off on bf16 CPUs)")
    flags.DEFINE_list("budget", [], "per-model minutes overriding --minutes, as NAME=MINUTES")
    flags.DEFINE_string("dataset", "mnist5k", "dataset of every run")
    flags.DEFINE_string("runs_dir", os.path.join("runs", "report"), "where the runs live; each run's folder is replaced")
    flags.DEFINE_string("out", os.path.join(ROOT, "docs", "zoo.md"), "the report (its sample grids go beside it, in zoo/)")
    flags.DEFINE_string("readme", os.path.join(ROOT, "README.md"), "README whose zoo table is replaced ('' for none)")
    flags.DEFINE_string("cache_dir", evaluate.CACHE_DIR, "where the evaluation classifiers are cached")
    flags.DEFINE_bool("keep", True, "keep the existing report's rows of models not run now")


class ReportError(Exception):
    pass


def default_models():
    models = list(zoo.names())
    if precision.cpu_has_bf16() and "dcgan" in models:
        models.insert(models.index("dcgan") + 1, "dcgan@off")
    return models


def parse_entry(entry):
    """'dcgan@off' -> ('dcgan', 'off'); 'vae' -> ('vae', 'auto')."""
    name, _, policy = entry.partition("@")
    if name not in zoo.names():
        raise ReportError(f"unknown model {name!r} in --models; choose from: {', '.join(zoo.names())}")
    if policy and policy not in precision.CHOICES:
        raise ReportError(f"{entry!r}: the part after @ must be one of {', '.join(precision.CHOICES)}")
    return name, policy or "auto"


def parse_budget(items, default):
    budget = {}
    for item in items:
        name, sep, minutes = item.partition("=")
        try:
            budget[name] = float(minutes)
        except ValueError:
            sep = ""
        if not sep:
            raise ReportError(f"--budget takes NAME=MINUTES items, got {item!r}")
        parse_entry(name)  # an unknown model is an error, not a budget silently unused
    return lambda entry: budget.get(entry, budget.get(parse_entry(entry)[0], default))


def train_run(entry, workdir, minutes, dataset, cache_dir, log_path):
    """Runs train.run for `minutes` of training in a fresh `workdir`; returns its exit code."""
    name, policy = parse_entry(entry)
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    args = [
        sys.executable, "-m", "train.run", f"--model={name}", f"--dataset={dataset}",
        f"--workdir={workdir}", "--epochs=100000", f"--max_minutes={minutes}", "--track_fcd",
        f"--eval_cache_dir={cache_dir}", f"--mixed_precision={policy}", "--verbose=2",
    ]
    with open(log_path, "w") as log:
        return subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def read_history(workdir):
    with open(os.path.join(workdir, "history.csv")) as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", "NA", None)} for row in csv.DictReader(fh)]


def time_to_quality(history, factor=QUALITY_FACTOR):
    """Training minutes of the first epoch whose FCD is within `factor` times
    the floor (real test vs real train features), or None."""
    for row in history:
        if row["fcd"] <= factor * row["fcd_reference"]:
            return row["minutes"]
    return None


def summarise(entry, workdir):
    """One row of the report from a finished run."""
    with open(os.path.join(workdir, "config.json")) as fh:
        config = json.load(fh)
    history = read_history(workdir)
    figures = evaluate.evaluate_workdir(workdir, FLAGS.cache_dir)
    batch = config["training"]["batch_size"]
    from train import data

    per_epoch = len(data.load(config["dataset"], config.get("image_size")).train_images) // batch * batch
    minutes = history[-1]["minutes"]
    return {
        "entry": entry,
        "model": config["model"],
        "policy": config["dtype_policy"],
        "epochs": len(history),
        "minutes": minutes,
        "images_per_s": len(history) * per_epoch / (60.0 * minutes),
        "minutes_to_quality": time_to_quality(history),
        "fcd_by_epoch": [round(row["fcd"], 2) for row in history],
        **figures,
    }


def previous_rows(path):
    """The rows of an existing report's JSON beside `path` ([] if none or unreadable)."""
    try:
        with open(os.path.splitext(path)[0] + ".json") as fh:
            rows = json.load(fh)
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and "entry" in r and "error" not in r]


def merged(previous, new):
    """previous rows with those of `new` entries replaced in place; other new rows appended."""
    fresh = {r["entry"]: r for r in new}
    rows = [fresh.pop(r["entry"], r) for r in previous]
    return rows + [r for r in new if r["entry"] in fresh]


def provenance(rows, key, fmt=str):
    """'X' when every row has the same `key`, else 'X (a, b), Y (c)'."""
    groups = {}
    for r in rows:
        groups.setdefault(fmt(r.get(key, "unknown")), []).append(r["entry"])
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{value} ({', '.join(entries)})" for value, entries in groups.items())


def _minutes(value):
    return f"{value:g} min" if isinstance(value, (int, float)) else str(value)


def _fmt(value, digits=2):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def table(rows):
    """The Markdown table of the report."""
    lines = [
        f"| model | compute | minutes | epochs | images/s | FCD (floor) | min to FCD <= {QUALITY_FACTOR:g}x floor "
        "| precision | recall | density | coverage | class entropy | probe acc. | IWAE (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['entry']} | failed: {r['error']} |" + " |" * 12)
            continue
        quality = _fmt(r["minutes_to_quality"], 1) if r["minutes_to_quality"] is not None else "not reached"
        lines.append(
            f"| {r['entry'].split('@')[0]} | {'bf16' if 'bfloat16' in r['policy'] else 'float32'} "
            f"| {r['minutes']:.{1 if r['minutes'] >= 1 else 2}f} | {r['epochs']} | {r['images_per_s']:.0f} "
            f"| {r['fcd']:.1f} ({r['fcd_reference']:.1f}) | {quality} "
            f"| {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['density'])} | {_fmt(r['coverage'])} "
            f"| {_fmt(abs(r['class_entropy']))} | {_fmt(r.get('linear_probe_accuracy'), 3)} | {_fmt(r.get('iwae'), 1)} |"
        )
    return "\n".join(lines)


def own_outputs(out, readme):
    """The files and folders a report writes: the report, its JSON and grids, README ('' for none)."""
    outputs = [out, os.path.splitext(out)[0] + ".json", os.path.join(os.path.dirname(out), "zoo")]
    return outputs + ([readme] if readme else [])


def commit(ignore=()):
    """HEAD's short hash, with '+uncommitted changes' when tracked files differ
    from it; the paths in `ignore` (the report's own outputs, which it rewrites
    as it goes) aside."""
    excluded = [f":(exclude){os.path.abspath(p)}" for p in ignore]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "") or "unknown"


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    units = "with" if precision.cpu_has_bf16() else "without"
    return f"{cpu}, {os.cpu_count()} cores, {units} bfloat16 units"


def write_text(path, text):
    """Writes `text` to `path` through a temporary file: a crash leaves the old file whole."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_report(rows, path):
    grid_dir = os.path.join(os.path.dirname(path), "zoo")
    lines = [
        "# The zoo's scoreboard",
        "",
        f"Written by `python -m train.report` on {time.strftime('%Y-%m-%d')} from commit "
        f"{provenance(rows, 'commit')}, on {machine()}. Each model trained on {rows[0].get('dataset', FLAGS.dataset)} "
        f"for {provenance(rows, 'budget', _minutes)} of training (to the end of the epoch that passed them), "
        "then `train.evaluate` "
        f"measured it against {rows[0].get('num_samples', 500)} test images (see its docstring for every figure). "
        "FCD is the Frechet distance in the features of the zoo's digit classifier; the floor in "
        "brackets is the distance of real train images to the test images. "
        f"The time to quality is the training time until the FCD, measured after every epoch, first came within "
        f"{QUALITY_FACTOR:g}x the floor. images/s is real images through the train step per second of training "
        "(the epochs' wall time, with their checkpoints and sample grids; the per-epoch FCD left out).",
        "",
        table(rows),
        "",
        "## FCD after each epoch",
        "",
    ]
    for r in rows:
        if "error" not in r:
            lines.append(f"- {r['entry']}: {', '.join(map(str, r['fcd_by_epoch']))}")
    lines += ["", "## Samples (the last epoch's grid of each run)", ""]
    for r in rows:
        if "error" not in r:
            lines += [f"### {r['entry']}", "", f"![{r['entry']}](zoo/{r['entry'].replace('@', '_')}.png)", ""]
    os.makedirs(grid_dir, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    write_text(os.path.splitext(path)[0] + ".json", json.dumps(rows, indent=2))


def update_readme(path, rows, report_path):
    """Replaces the table between the zoo-table markers of README.md."""
    with open(path) as fh:
        text = fh.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        logging.warning("%s has no %s ... %s markers; its table is not updated", path, TABLE_BEGIN, TABLE_END)
        return
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    link = os.path.relpath(report_path, os.path.dirname(os.path.abspath(path)))
    block = (
        f"{TABLE_BEGIN}\n{table(rows)}\n\nFrom `python -m train.report` at commit {provenance(rows, 'commit')}; "
        f"details in [{link}]({link}).\n{TABLE_END}"
    )
    write_text(path, head + block + tail)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
        entries = FLAGS.models or default_models()
        for entry in entries:
            parse_entry(entry)
        minutes_for = parse_budget(FLAGS.budget, FLAGS.minutes)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    previous = previous_rows(FLAGS.out) if FLAGS.keep else []
    new = []
    for entry in entries:
        workdir = os.path.abspath(os.path.join(FLAGS.runs_dir, entry.replace("@", "_")))
        log_path = workdir + ".log"
        minutes = minutes_for(entry)
        print(f"{entry}: training for {minutes:g} min in {workdir} (log: {log_path})", flush=True)
        code = train_run(entry, workdir, minutes, FLAGS.dataset, FLAGS.cache_dir, log_path)
        try:
            if code != 0:
                raise ReportError(f"train.run exited with {code}, see {log_path}")
            measured_at = commit(own_outputs(FLAGS.out, FLAGS.readme))
            row = {**summarise(entry, workdir), "commit": measured_at, "budget": minutes}
            grids = sorted(os.listdir(os.path.join(workdir, "samples")))
            os.makedirs(os.path.join(os.path.dirname(FLAGS.out), "zoo"), exist_ok=True)
            shutil.copy(os.path.join(workdir, "samples", grids[-1]),
                        os.path.join(os.path.dirname(FLAGS.out), "zoo", entry.replace("@", "_") + ".png"))
        except Exception as e:  # one failed model must not cost the others' hours
            row = {"entry": entry, "error": str(e).splitlines()[0][:300] if str(e) else type(e).__name__}
            print(f"{entry}: failed: {row['error']}", flush=True)
        else:
            print(json.dumps({k: v for k, v in row.items() if k not in ("class_histogram", "fcd_by_epoch")}), flush=True)
        new.append(row)
        rows = merged(previous, new)
        write_report(rows, FLAGS.out)  # after every model, so that a crash later keeps what was measured
    if FLAGS.readme:
        update_readme(FLAGS.readme, rows, FLAGS.out)
    print(table(rows))
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
