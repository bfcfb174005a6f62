"""The zoo's scoreboard: python -m train.report [--models=...] [--minutes=N]

Trains every registered model on mnist5k, evaluates each run (train.evaluate)
and writes docs/zoo.md: one table row per model, the FCD after each epoch as a
plot, and the last sample grid. By default each model gets its default run,
what `python -m train.run --model=NAME` does (the model's own epochs and
options); the report only adds the flags its measurement needs (--workdir,
--track_fcd, --eval_cache_dir, --verbose=2). --minutes=N trains each model for
a budget of N training minutes instead (--epochs=100000 --max_minutes=N: it
stops at the end of the first epoch past the budget); --budget=NAME=N does so
for some models only. Such rows are marked as budget rows.

Every run records the FCD after each of its epochs (train.run --track_fcd;
the time it takes is left out of the training minutes), so the table also
gives the time to quality: the training minutes until the FCD first came
within 3x of the real-vs-real floor. The same table replaces the one between
the zoo-table markers of README.md. Numbers come only from these runs; the
file names the commit, the machine and the train.run command of each row.

--models=NAME,... runs only those and keeps the other rows of the existing
report (docs/zoo.json), each with the commit and the run it was measured at;
--nokeep starts the report afresh. A model named NAME@off runs with
--mixed_precision=off (float32), e.g. --models=dcgan,dcgan@off to compare the
two precisions.
"""

import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import zoo  # noqa: E402
from train import cli  # noqa: E402
from train import evaluate, plots, precision  # noqa: E402
from train import workdir as workdirs  # noqa: E402

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUALITY_FACTOR = 3.0  # "time to quality": FCD within this factor of the floor
TABLE_BEGIN, TABLE_END = "<!-- zoo:table -->", "<!-- /zoo:table -->"
BUDGET_EPOCHS = 100000  # a budget run ends by its minutes, not its epochs


def define_flags():
    flags.DEFINE_float("minutes", None, "train every model for this budget of training minutes instead of its "
                       "default run (each run ends with the epoch that passes them); its rows are budget rows")
    flags.DEFINE_list("models", None, "models to run, NAME or NAME@off for float32 (default: all)")
    flags.DEFINE_list("budget", [], "budget runs for some models only, as NAME=MINUTES (overrides --minutes)")
    flags.DEFINE_string("dataset", None, "dataset of every run (default: train.run's, mnist5k)")
    flags.DEFINE_string("runs_dir", os.path.join("runs", "report"), "where the runs live; each run's folder is replaced")
    flags.DEFINE_string("out", os.path.join(ROOT, "docs", "zoo.md"), "the report (its plots and sample grids go beside it, in zoo/)")
    flags.DEFINE_string("readme", os.path.join(ROOT, "README.md"), "README whose zoo table is replaced ('' for none)")
    flags.DEFINE_string("cache_dir", evaluate.CACHE_DIR, "where the evaluation classifiers are cached")
    flags.DEFINE_bool("keep", True, "keep the existing report's rows of models not run now")
    # For tests only (listed by --helpfull, not --help): appended to every
    # train.run command, e.g. --steps_per_epoch=2; the rows' commands show them.
    flags.DEFINE_string("extra_args", "", "for tests: extra train.run arguments for every run",
                        module_name="train.report.testing")


class ReportError(Exception):
    pass


def default_models():
    return list(zoo.names())


def parse_entry(entry):
    """'dcgan@off' -> ('dcgan', 'off'); 'vae' -> ('vae', 'auto')."""
    name, _, policy = entry.partition("@")
    if name not in zoo.names():
        raise ReportError(f"unknown model {name!r} in --models; choose from: {', '.join(zoo.names())}")
    if policy and policy not in precision.CHOICES:
        raise ReportError(f"{entry!r}: the part after @ must be one of {', '.join(precision.CHOICES)}")
    return name, policy or "auto"


def parse_budget(items, default):
    """entry -> its budget of minutes, or None for the model's default run."""
    if default is not None and default <= 0:
        raise ReportError(f"--minutes must be positive, got {default:g}")
    budget = {}
    for item in items:
        name, sep, minutes = item.partition("=")
        try:
            budget[name] = float(minutes)
        except ValueError:
            sep = ""
        if not sep or budget[name] <= 0:
            raise ReportError(f"--budget takes NAME=MINUTES items with MINUTES > 0, got {item!r}")
        parse_entry(name)  # an unknown model is an error, not a budget silently unused
    return lambda entry: budget.get(entry, budget.get(parse_entry(entry)[0], default))


def run_args(entry, minutes=None, dataset=None):
    """The train.run options a row stands for: none but --model for a default
    run (the model's epochs and options, train.run's dataset and precision);
    a budget run adds --epochs and --max_minutes."""
    name, policy = parse_entry(entry)
    args = [f"--model={name}"]
    if dataset:
        args.append(f"--dataset={dataset}")
    if policy != "auto":
        args.append(f"--mixed_precision={policy}")
    if minutes is not None:
        short = f"{minutes:g}"
        args += [f"--epochs={BUDGET_EPOCHS}", f"--max_minutes={short if float(short) == minutes else repr(minutes)}"]
    return args


def command(entry, minutes=None, dataset=None, extra=()):
    """The train.run command of a row, as a user would type it."""
    return shlex.join(["python", "-m", "train.run", *run_args(entry, minutes, dataset), *extra])


def train_argv(entry, workdir, cache_dir, minutes=None, dataset=None, extra=()):
    """The run's train.run argv: the row's options, then only what measuring
    it needs (its workdir, the FCD after every epoch, a line per epoch in the log)."""
    return [
        sys.executable, "-m", "train.run", *run_args(entry, minutes, dataset),
        f"--workdir={workdir}", "--track_fcd", f"--eval_cache_dir={cache_dir}", "--verbose=2", *extra,
    ]


def train_run(argv, workdir, log_path):
    """Runs train.run `argv` in a fresh `workdir`; returns its exit code."""
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    with open(log_path, "w") as log:
        return subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


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


def summarise(entry, workdir, cache_dir=evaluate.CACHE_DIR):
    """One row of the report from a finished run (evaluation classifiers cached in cache_dir)."""
    with open(os.path.join(workdir, "config.json")) as fh:
        config = json.load(fh)
    history = read_history(workdir)
    figures = evaluate.evaluate_workdir(workdir, cache_dir)
    batch = config["training"]["batch_size"]
    from train import data

    per_epoch = len(data.load_config(config).train_images) // batch * batch
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


def is_budget(row):
    """Whether a row comes from a budget of minutes (rows of reports before
    the default runs have no "mode" but a "budget" in minutes)."""
    return row.get("mode", "budget" if isinstance(row.get("budget"), (int, float)) else "default") == "budget"


def _epochs(n):
    return f"{n} epoch" + ("" if n == 1 else "s")


def _train_minutes(value):
    return f"{value:.{1 if value >= 1 else 2}f} min"


def run_label(row):
    return f"budget {_minutes(row['budget'])}" if is_budget(row) else "default"


def _fmt(value, digits=2):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _ratio(r):
    ratio = r.get("fcd_ratio", r["fcd"] / r["fcd_reference"] if r.get("fcd_reference") else None)
    return _fmt(ratio, 1)


def _probe(r):
    if r.get("linear_probe_accuracy") is None:
        return "-"
    pixels = r.get("linear_probe_pixels")
    return _fmt(r["linear_probe_accuracy"], 3) + (f" ({pixels:.3f})" if pixels is not None else "")


def _accuracy(r):
    """conditional_accuracy, or an unsupervised code's category_accuracy in brackets."""
    if r.get("category_accuracy") is not None:
        return f"({r['category_accuracy']:.3f})"
    return _fmt(r.get("conditional_accuracy"), 3)


COLUMNS = (
    "model", "run", "compute", "minutes", "epochs", "images/s", "FCD (floor)", "FCD / floor",
    f"min to FCD <= {QUALITY_FACTOR:g}x floor", "precision", "recall", "density", "coverage", "class entropy",
    "cond. acc.", "probe acc. (pixels)", "IWAE bound (nats)",
)
BOUND_TAGS = ("conditional", "unnormalised")  # the suffixes of train.evaluate's bound names


def _bound(r):
    """The IWAE bound of a row, tagged with what it bounds: "(conditional)" for
    log p(x | y), "(unnormalised)" for the Bernoulli pmf on grey levels (rows
    of reports before train.evaluate named its bounds have a bare "iwae", which
    was that), "(8-bit, B bpd)" for a pmf over 8-bit levels with its bits per
    dimension, "-" for models without one."""
    for key, value in r.items():
        if value is not None and (key == "iwae" or (key.startswith("iwae_") and key != "iwae_k")):
            tags = [t for t in BOUND_TAGS if t in key] + ["binarised"] * (r.get("bound_kind") == "binary")
            bpd = next((v for k, v in r.items() if k.startswith("bpd") and v is not None), None)
            if r.get("bound_kind") == "discrete_8bit" and bpd is not None:
                tags.append(f"8-bit, {bpd:.3f} bpd")
            if key == "iwae" and "bound_kind" not in r:
                tags = ["conditional"] * bool(r.get("conditional_accuracy") is not None) + ["unnormalised"]
            return _fmt(value, 1) + (f" ({', '.join(tags)})" if tags else "")
    return "-"


def table(rows):
    """The Markdown table of the report."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['entry']} | failed: {r['error']} |" + " |" * (len(COLUMNS) - 2))
            continue
        quality = _fmt(r["minutes_to_quality"], 1) if r["minutes_to_quality"] is not None else "not reached"
        cells = [
            r["entry"].split("@")[0], run_label(r), "bf16" if "bfloat16" in r["policy"] else "float32",
            _train_minutes(r["minutes"]).split()[0], str(r["epochs"]), f"{r['images_per_s']:.0f}",
            f"{r['fcd']:.1f} ({r['fcd_reference']:.1f})", _ratio(r), quality,
            _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["density"]), _fmt(r["coverage"]),
            _fmt(abs(r["class_entropy"])), _accuracy(r), _probe(r), _bound(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_text(rows):
    """What the rows' runs were, for the report and README: the default runs,
    the budget runs (with their minutes) or both, each naming its models."""
    ok = [r for r in rows if "error" not in r]
    default = [r["entry"] for r in ok if not is_budget(r)]
    budget = [r for r in ok if is_budget(r)]
    parts = []
    if default:
        who = "Each model ran its" if not budget else f"The rows marked default ({', '.join(default)}) are each model's"
        parts.append(f"{who} default run, `python -m train.run --model=NAME`: the model's own epochs "
                     "and options, as a user gets them.")
    if budget:
        who = "Each model" if not default else f"The rows marked budget ({', '.join(r['entry'] for r in budget)})"
        instead = " instead" if default else ""
        parts.append(f"{who} trained for a budget of training minutes{instead}, {provenance(budget, 'budget', _minutes)} "
                     f"(`--epochs={BUDGET_EPOCHS} --max_minutes=N`: to the end of the first epoch past them).")
    return " ".join(parts)


def row_command(row):
    """The train.run command of a row; rows of reports before the default runs
    did not record it, but were budget runs on train.run's defaults otherwise."""
    if row.get("command"):
        return row["command"]
    try:
        return command(row["entry"], row["budget"] if is_budget(row) else None)
    except (ReportError, KeyError, TypeError, ValueError):
        return "(not recorded)"


def plot_fcd(row, path):
    """The FCD after each epoch of a row's run, with the floor and QUALITY_FACTOR x the floor."""
    fcd = row["fcd_by_epoch"]
    floor = row["fcd_reference"]
    fig, ax = plots.pyplot().subplots(figsize=(6, 3.2), dpi=100)
    try:
        ax.plot(range(1, len(fcd) + 1), fcd, marker="." if len(fcd) <= 60 else None, label="FCD")
        ax.axhline(floor, color="gray", linestyle="--", label=f"floor ({floor:.1f})")
        ax.axhline(QUALITY_FACTOR * floor, color="tab:red", linestyle=":",
                   label=f"{QUALITY_FACTOR:g}x floor ({QUALITY_FACTOR * floor:.1f})")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("FCD (log scale)")
        ax.set_title(f"{row['entry']}: {run_label(row)} run, {_epochs(row['epochs'])} in {_train_minutes(row['minutes'])}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    except BaseException:
        plots.pyplot().close(fig)
        raise
    plots.save(fig, path)


def _file_stem(entry):
    return entry.replace("@", "_")


def figure_dir(out):
    """Where the report `out` keeps its plots and sample grids: beside it, named
    as it is without .md (docs/zoo.md: docs/zoo/), so two reports never share one."""
    return os.path.splitext(out)[0]


def own_outputs(out, readme):
    """The files and folders a report writes: the report, its JSON and grids, README ('' for none)."""
    outputs = [out, os.path.splitext(out)[0] + ".json", figure_dir(out)]
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


def write_report(rows, path, dataset=None):
    """Writes the report of `rows` to `path` (`dataset`: what the runs trained
    on, where no row records it; default mnist5k)."""
    grid_dir = figure_dir(path)
    grids = os.path.basename(grid_dir)
    ok = [r for r in rows if "error" not in r]
    known = [r for r in ok if "dataset" in r]
    lines = [
        "# The zoo's scoreboard",
        "",
        f"Written by `python -m train.report` on {time.strftime('%Y-%m-%d')} from commit "
        f"{provenance(rows, 'commit')}, on {machine()}. Each model trained on "
        f"{provenance(known, 'dataset') if known else dataset or 'mnist5k'}. {runs_text(rows)} "
        "Then `train.evaluate` "
        f"measured it against {ok[0].get('num_samples', 500) if ok else 500} test images (see its docstring for every "
        "figure). FCD is the Frechet distance in the features of the zoo's digit classifier; the floor in "
        "brackets is the distance of real train images to the test images, and FCD / floor is 1 for a perfect "
        "generator. "
        f"The time to quality is the training time until the FCD, measured after every epoch, first came within "
        f"{QUALITY_FACTOR:g}x the floor. images/s is real images through the train step per second of training "
        "(the epochs' wall time, with their checkpoints and sample grids; the per-epoch FCD left out). "
        "cond. acc. is the share of a conditional model's samples that the classifier gives the asked label; "
        "in brackets, for a model with an unsupervised categorical code (infogan), the category accuracy: the "
        "share of samples of a category given the class that category is best matched to. "
        "The probe is a logistic regression on the codes of the train images, scored on the test images; in "
        "brackets the same probe on their raw pixels.",
        "",
        table(rows),
        "",
        "## Each run",
        "",
        "The command of the row (the report adds `--workdir`, `--track_fcd`, `--eval_cache_dir` and "
        "`--verbose=2`), the FCD after each epoch with the floor and "
        f"{QUALITY_FACTOR:g}x the floor, and the last epoch's sample grid (one fixed latent batch).",
        "",
    ]
    os.makedirs(grid_dir, exist_ok=True)
    for r in ok:
        stem = _file_stem(r["entry"])
        if r.get("fcd_by_epoch"):
            plot_fcd(r, os.path.join(grid_dir, f"{stem}_fcd.png"))
        lines += [
            f"### {r['entry']}",
            "",
            f"`{row_command(r)}` ({run_label(r)} run, commit {r.get('commit', 'unknown')}): {_epochs(r['epochs'])} "
            f"in {_train_minutes(r['minutes'])} of training.",
            "",
            f"![{r['entry']}: FCD after each epoch]({grids}/{stem}_fcd.png)",
            "",
            f"![{r['entry']}: samples]({grids}/{stem}.png)",
            "",
            f"FCD after each epoch: {', '.join(map(str, r.get('fcd_by_epoch', [])))}",
            "",
        ]
    workdirs.write_text(path, "\n".join(lines))
    workdirs.write_text(os.path.splitext(path)[0] + ".json", json.dumps(rows, indent=2))


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
        f"{TABLE_BEGIN}\n{table(rows)}\n\nFrom `python -m train.report` at commit {provenance(rows, 'commit')}. "
        f"{runs_text(rows)} Details, the FCD after each epoch and sample grids in [{link}]({link}).\n{TABLE_END}"
    )
    workdirs.write_text(path, head + block + tail)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
        entries = FLAGS.models or default_models()
        for entry in entries:
            parse_entry(entry)
        minutes_for = parse_budget(FLAGS.budget, FLAGS.minutes)
        extra = shlex.split(FLAGS.extra_args)
    except (ReportError, ValueError) as e:
        cli.fail(e)
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    previous = previous_rows(FLAGS.out) if FLAGS.keep else []
    new = []
    for entry in entries:
        workdir = os.path.abspath(os.path.join(FLAGS.runs_dir, _file_stem(entry)))
        log_path = workdir + ".log"
        minutes = minutes_for(entry)
        cmd = command(entry, minutes, FLAGS.dataset, extra)
        kind = "default run" if minutes is None else f"budget of {minutes:g} min"
        print(f"{entry}: {kind}, {cmd}, in {workdir} (log: {log_path})", flush=True)
        code = train_run(train_argv(entry, workdir, FLAGS.cache_dir, minutes, FLAGS.dataset, extra), workdir, log_path)
        try:
            if code != 0:
                raise ReportError(f"train.run exited with {code}, see {log_path}")
            measured_at = commit(own_outputs(FLAGS.out, FLAGS.readme))
            row = {**summarise(entry, workdir, FLAGS.cache_dir), "commit": measured_at,
                   "mode": "default" if minutes is None else "budget", "budget": minutes, "command": cmd}
            grids = sorted(os.listdir(os.path.join(workdir, "samples")))
            os.makedirs(figure_dir(FLAGS.out), exist_ok=True)
            shutil.copy(os.path.join(workdir, "samples", grids[-1]),
                        os.path.join(figure_dir(FLAGS.out), _file_stem(entry) + ".png"))
        except Exception as e:  # one failed model must not cost the others' hours
            row = {"entry": entry, "error": str(e).splitlines()[0][:300] if str(e) else type(e).__name__}
            print(f"{entry}: failed: {row['error']}", flush=True)
        else:
            print(json.dumps({k: v for k, v in row.items() if k not in ("class_histogram", "fcd_by_epoch")}), flush=True)
        new.append(row)
        rows = merged(previous, new)
        write_report(rows, FLAGS.out, FLAGS.dataset)  # after every model, so that a crash later keeps what was measured
    if FLAGS.readme:
        update_readme(FLAGS.readme, rows, FLAGS.out)
    print(table(rows))
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
