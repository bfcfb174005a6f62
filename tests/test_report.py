"""train.report: trains each model's default run (or a budget of minutes),
evaluates, writes docs/zoo.md and README's table; and its time-to-quality
reading of history.csv."""

import copy
import dataclasses
import json
import os
import sys

import numpy as np
import pytest
from conftest import run_module

import zoo
from train import evaluate, precision, report
from zoo import metrics

README = """# project

before
<!-- zoo:table -->
old table
<!-- /zoo:table -->
after
"""


def test_time_to_quality_is_the_first_epoch_within_the_factor():
    history = [
        {"minutes": 1.0, "fcd": 40.0, "fcd_reference": 4.0},
        {"minutes": 2.0, "fcd": 12.5, "fcd_reference": 4.0},
        {"minutes": 3.0, "fcd": 11.9, "fcd_reference": 4.0},  # 11.9 <= 3 * 4
        {"minutes": 4.0, "fcd": 9.0, "fcd_reference": 4.0},
    ]
    assert report.time_to_quality(history) == 3.0
    assert report.time_to_quality(history[:2]) is None


PREVIOUS_VAE = {
    "entry": "vae", "model": "vae", "policy": "float32", "epochs": 3, "minutes": 4.0, "images_per_s": 100.0,
    "minutes_to_quality": None, "fcd_by_epoch": [30.0, 20.0, 10.0], "fcd": 10.0, "fcd_reference": 4.0,
    "precision": 0.5, "recall": 0.5, "density": 0.5, "coverage": 0.5, "class_entropy": 2.0,
    "commit": "abc1234", "budget": 4.0,
}



def parsed_by_train_run(argv):
    """train.run's flags (a copy) after parsing the options of a train.run argv."""
    from train import run

    run.define_flags()
    assert argv[:3] == [sys.executable, "-m", "train.run"]
    values = copy.deepcopy(run.FLAGS)
    values(["train.run", *argv[3:]])
    return run, values


def test_default_mode_runs_exactly_the_models_default_run(tmp_path):
    workdir, cache = str(tmp_path / "w"), str(tmp_path / "c")
    argv = report.train_argv("cgan", workdir, cache)
    assert argv == [sys.executable, "-m", "train.run", "--model=cgan",  # the user's command; then measuring only
                    f"--workdir={workdir}", "--track_fcd", f"--eval_cache_dir={cache}", "--verbose=2"]
    assert report.command("cgan") == "python -m train.run --model=cgan"
    run, values = parsed_by_train_run(argv)
    _, config = run.resolve(values)
    assert config["training"] == zoo.get("cgan").training_defaults_for(config["model_options"])  # its own
    assert config["dataset"] == "mnist5k" and config["model_options"] == dataclasses.asdict(zoo.get("cgan").Config())
    assert values["max_minutes"].value is None and values["mixed_precision"].value == "auto"
    assert report.parse_budget([], None)("cgan") is None  # no --minutes: a default run
    assert report.default_models() == list(zoo.names())  # one row per model, no dcgan@off by default


def test_budget_mode_adds_only_the_budget(tmp_path):
    argv = report.train_argv("dcgan@off", "/w", "/c", minutes=4.0, dataset="digits", extra=["--steps_per_epoch=2"])
    assert argv[3:] == ["--model=dcgan", "--dataset=digits", "--mixed_precision=off", "--epochs=100000",
                        "--max_minutes=4", "--workdir=/w", "--track_fcd", "--eval_cache_dir=/c", "--verbose=2",
                        "--steps_per_epoch=2"]
    assert report.command("vae", 0.25) == "python -m train.run --model=vae --epochs=100000 --max_minutes=0.25"
    _, values = parsed_by_train_run(report.train_argv("vae", "/w", "/c", minutes=1 / 3))
    assert values["max_minutes"].value == 1 / 3 and values["epochs"].value == 100000
    minutes_for = report.parse_budget(["dcgan=15"], None)  # --budget alone: budget rows for those models only
    assert minutes_for("dcgan@off") == 15.0 and minutes_for("vae") is None
    assert report.parse_budget(["dcgan@off=15"], 4.0)("dcgan") == 4.0  # --minutes for the others
    for bad in ((["vae=0"], None), ([], 0.0), (["vae"], None)):
        with pytest.raises(report.ReportError):
            report.parse_budget(*bad)


def cells(text):
    """{model cell + run cell: {column: cell}} of the report's table in `text`."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == report.COLUMNS
    rows = {}
    for line in lines[1:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        rows[f"{row['model']} {row['compute']} {row['run']}"] = row
    return rows


DEFAULT_CGAN = {
    **PREVIOUS_VAE, "entry": "cgan", "model": "cgan", "policy": "mixed_bfloat16", "epochs": 50, "minutes": 2.5,
    "fcd": 8.6, "fcd_reference": 4.3, "fcd_ratio": 2.0, "conditional_accuracy": 0.95, "mode": "default",
    "budget": None, "command": "python -m train.run --model=cgan",
}
BUDGET_AE = {
    **PREVIOUS_VAE, "entry": "ae", "model": "ae", "mode": "budget", "budget": 10.0, "fcd": 12.8,
    "linear_probe_accuracy": 0.928, "linear_probe_pixels": 0.918, "iwae": None,
    "command": "python -m train.run --model=ae --epochs=100000 --max_minutes=10",
}


def test_table_marks_default_and_budget_rows():
    old_vae = {**PREVIOUS_VAE, "iwae": -97.5, "linear_probe_accuracy": 0.91}  # a row of a report before the modes
    infogan = {**DEFAULT_CGAN, "entry": "infogan", "model": "infogan", "conditional_accuracy": None,
               "category_accuracy": 0.8125}
    rows = cells(report.table([DEFAULT_CGAN, BUDGET_AE, old_vae, infogan]))
    cgan, ae, vae = rows["cgan bf16 default"], rows["ae float32 budget 10 min"], rows["vae float32 budget 4 min"]
    assert rows["infogan bf16 default"]["cond. acc."] == "(0.812)"  # an unsupervised code's category accuracy
    assert (cgan["minutes"], cgan["epochs"], cgan["FCD (floor)"], cgan["FCD / floor"]) == ("2.5", "50", "8.6 (4.3)", "2.0")
    assert cgan["cond. acc."] == "0.950" and cgan["probe acc. (pixels)"] == "-" and cgan["IWAE bound (nats)"] == "-"
    assert ae["probe acc. (pixels)"] == "0.928 (0.918)" and ae["cond. acc."] == "-" and ae["FCD / floor"] == "3.2"
    assert vae["FCD / floor"] == "2.5" and vae["probe acc. (pixels)"] == "0.910"
    assert vae["IWAE bound (nats)"] == "-97.5 (unnormalised)"  # a bare "iwae" was the Bernoulli on grey levels
    assert (ae["precision"], ae["recall"], ae["density"], ae["coverage"], ae["class entropy"]) == (
        "0.50", "0.50", "0.50", "0.50", "2.00")
    mixed = report.runs_text([DEFAULT_CGAN, BUDGET_AE, old_vae])
    assert "The rows marked default (cgan) are each model's default run" in mixed
    assert "The rows marked budget (ae, vae) trained for a budget of training minutes instead, 10 min (ae), 4 min (vae)" in mixed
    assert report.runs_text([DEFAULT_CGAN]).startswith("Each model ran its default run")
    assert "budget" not in report.runs_text([DEFAULT_CGAN])
    assert report.runs_text([old_vae]).startswith("Each model trained for a budget of training minutes, 4 min")


def test_the_bound_column_says_what_each_bound_bounds():
    named = {
        "-95.4 (conditional, unnormalised)": {"iwae_conditional_unnormalised": -95.4, "bound_kind": "unnormalised"},
        "-90.1 (binarised)": {"iwae": -90.1, "nll_nats": 90.1, "bound_kind": "binary", "iwae_k": 5000},
        "-88.0 (conditional)": {"iwae_conditional": -88.0, "bound_kind": "density"},
        "-600.0 (8-bit, 1.104 bpd)": {"elbo": -610.0, "iwae": -600.0, "bpd": 1.1042, "elbo_bpd": 1.12,
                                      "bound_kind": "discrete_8bit"},
        "-610.0 (conditional, 8-bit, 1.104 bpd)": {"iwae_conditional": -610.0, "bpd_conditional": 1.1042,
                                                   "bound_kind": "discrete_8bit"},
        "-": {"iwae_k": 64},
    }
    for shown, figures in named.items():
        assert report._bound({**DEFAULT_CGAN, "conditional_accuracy": None, **figures}) == shown, figures


def test_pixel_probe_is_the_codes_probe_on_raw_pixels_cached_per_dataset(digits, tmp_path, monkeypatch):
    calls = []

    def probe(train_x, train_y, test_x, test_y):
        calls.append((train_x, train_y, test_x, test_y))
        return 0.5 + 0.125 * len(calls)

    monkeypatch.setattr(metrics, "linear_probe_accuracy", probe)  # the probe of the codes, whatever it is
    assert evaluate.pixel_probe_accuracy(digits, str(tmp_path)) == 0.625
    (train_x, train_y, test_x, test_y), = calls
    n, m = len(digits.train_images), len(digits.test_images)
    assert np.array_equal(train_x, digits.train_images.reshape(n, 8 * 8)) and np.array_equal(train_y, digits.train_labels)
    assert np.array_equal(test_x, digits.test_images.reshape(m, 8 * 8)) and np.array_equal(test_y, digits.test_labels)
    assert evaluate.pixel_probe_accuracy(digits, str(tmp_path)) == 0.625 and len(calls) == 1  # from the cache
    cached = tmp_path / "pixel-probe-digits-8x8x1.json"
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "sizes": {"train": 1, "test": 1}}))
    assert evaluate.pixel_probe_accuracy(digits, str(tmp_path)) == 0.75  # another split: measured afresh


def test_merged_keeps_previous_rows_and_replaces_rerun_ones():
    previous = [{"entry": "ae", "v": 1}, {"entry": "vae", "v": 1}]
    new = [{"entry": "gan", "v": 2}, {"entry": "ae", "v": 2}]
    assert report.merged(previous, new) == [{"entry": "ae", "v": 2}, {"entry": "vae", "v": 1}, {"entry": "gan", "v": 2}]
    assert report.merged([], new) == new


def test_provenance_names_each_value_once():
    rows = [{"entry": "ae", "commit": "a"}, {"entry": "vae", "commit": "b"}, {"entry": "gan", "commit": "a"}]
    assert report.provenance(rows[:1], "commit") == "a"
    assert report.provenance(rows, "commit") == "a (ae, gan), b (vae)"
    assert report.provenance([{"entry": "ae", "budget": 4.0}], "budget", report._minutes) == "4 min"


def test_report_trains_evaluates_and_writes_the_tables(tmp_path):
    """ae: its default run (cut to 2 epochs of 2 steps by the tests' --extra_args); gan@off: a budget
    of 0.01 min; vae: a budget row of an earlier report, kept. That a default row runs the model's own
    epochs is test_default_mode_runs_exactly_the_models_default_run's."""
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "docs" / "zoo.md"
    out.parent.mkdir()
    (tmp_path / "docs" / "zoo.json").write_text(json.dumps([PREVIOUS_VAE]))  # a row of an earlier report
    proc = run_module(
        "train.report", "--dataset=digits", "--models=ae,gan@off", "--budget=gan@off=0.01",
        "--extra_args=--steps_per_epoch=2 --epochs=2 --jit_compile=off",  # no XLA: conftest.without_xla
        f"--runs_dir={tmp_path / 'runs'}", f"--out={out}",
        f"--readme={readme}", f"--cache_dir={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    table = cells(text)
    auto = "bf16" if precision.cpu_has_bf16() else "float32"
    assert sorted(table) == [f"ae {auto} default", "gan float32 budget 0.01 min", "vae float32 budget 4 min"]
    assert table["vae float32 budget 4 min"]["epochs"] == "3"  # kept from the earlier report, its commit named
    assert "abc1234 (vae)" in text and "rows marked default (ae)" in text
    assert "rows marked budget (vae, gan@off) trained for a budget of training minutes instead, 4 min (vae), 0.01 min (gan@off)" in text
    # the row of the earlier report: its command as it ran (on train.run's default dataset)
    assert "`python -m train.run --model=vae --epochs=100000 --max_minutes=4` (budget 4 min run, commit abc1234)" in text
    for name in ("ae", "gan_off"):
        assert (tmp_path / "docs" / "zoo" / f"{name}.png").stat().st_size > 0
    for name in ("ae", "gan_off", "vae"):  # an FCD plot for every row, the kept one too
        assert (tmp_path / "docs" / "zoo" / f"{name}_fcd.png").read_bytes().startswith(b"\x89PNG")
        assert f"](zoo/{name}_fcd.png)" in text
    results = json.loads((tmp_path / "docs" / "zoo.json").read_text())
    assert [r["entry"] for r in results] == ["vae", "ae", "gan@off"]
    assert results[0] == PREVIOUS_VAE
    ae, gan = results[1:]
    assert ae["mode"] == "default" and ae["budget"] is None
    assert ae["command"] == ("python -m train.run --model=ae --dataset=digits --steps_per_epoch=2 --epochs=2 "
                             "--jit_compile=off")
    assert ae["epochs"] == 2
    assert gan["mode"] == "budget" and gan["budget"] == 0.01
    assert gan["command"] == ("python -m train.run --model=gan --dataset=digits --mixed_precision=off "
                              "--epochs=100000 --max_minutes=0.01 --steps_per_epoch=2 --epochs=2 --jit_compile=off")
    assert f"`{ae['command']}` (default run" in text and f"`{gan['command']}` (budget 0.01 min run" in text
    for r in results[1:]:
        assert r["commit"] != "abc1234"
        assert r["epochs"] >= 1 and r["minutes"] > 0 and r["images_per_s"] > 0
        assert len(r["fcd_by_epoch"]) == r["epochs"] and r["fcd"] > 0 and r["fcd_reference"] > 0
        assert r["fcd_ratio"] == pytest.approx(r["fcd"] / r["fcd_reference"])
        assert os.path.exists(tmp_path / "runs" / r["entry"].replace("@", "_") / "eval.json")
    # evaluate's output: the codes' probe beside the same probe on raw pixels, for models with an encoder
    written = json.loads((tmp_path / "runs" / "ae" / "eval.json").read_text())
    pixels = json.loads((tmp_path / "cache" / "pixel-probe-digits-8x8x1.json").read_text())["accuracy"]
    assert written["linear_probe_pixels"] == ae["linear_probe_pixels"] == pixels > 0.5
    assert list(written).index("linear_probe_pixels") == list(written).index("linear_probe_accuracy") + 1
    assert "linear_probe_accuracy" in ae and "linear_probe_pixels" not in gan and "linear_probe_accuracy" not in gan
    ae_row = next(line for line in text.splitlines() if line.startswith("| ae "))
    assert f"({pixels:.3f})" in ae_row
    new_readme = readme.read_text()
    assert "old table" not in new_readme and ae_row in new_readme and "rows marked default (ae)" in new_readme
    assert new_readme.startswith("# project\n\nbefore\n") and new_readme.endswith("after\n")


def test_unknown_model_is_a_one_line_error(tmp_path):
    proc = run_module("train.report", "--models=vae,nosuch", f"--out={tmp_path / 'zoo.md'}", "--readme=")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nosuch' in --models; choose from: aae")
    assert "Traceback" not in proc.stderr


def test_commit_ignores_the_reports_own_outputs(tmp_path, monkeypatch):
    """The report rewrites docs/zoo.* and README as it goes: that is not an uncommitted change."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "docs").mkdir()
    for name in ("docs/zoo.md", "docs/zoo.json", "README.md", "code.py"):
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    outputs = report.own_outputs(str(tmp_path / "docs" / "zoo.md"), str(tmp_path / "README.md"))
    for name in ("docs/zoo.md", "docs/zoo.json", "README.md"):
        (tmp_path / name).write_text("v2\n")
    assert report.commit(outputs) == report.commit().split("+")[0]  # clean once the outputs are set aside
    assert report.commit().endswith("+uncommitted changes")
    (tmp_path / "code.py").write_text("v2\n")
    assert report.commit(outputs).endswith("+uncommitted changes")
