"""train.report: trains for a time budget, evaluates, writes docs/zoo.md and
README's table; and its time-to-quality reading of history.csv."""

import json
import os

from conftest import run_module

from train import report

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
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "docs" / "zoo.md"
    out.parent.mkdir()
    (tmp_path / "docs" / "zoo.json").write_text(json.dumps([PREVIOUS_VAE]))  # a row of an earlier report
    proc = run_module(
        "train.report", "--dataset=digits", "--models=ae,gan@off", "--minutes=0.01",
        f"--runs_dir={tmp_path / 'runs'}", f"--out={out}", f"--readme={readme}",
        f"--cache_dir={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ae ") or line.startswith("| gan ")]
    assert len(rows) == 2, text
    assert "| gan | float32 |" in text  # gan@off ran in float32
    assert "| vae | float32 | 4.0 | 3 |" in text  # kept from the earlier report, with its commit named
    assert "abc1234 (vae)" in text and "0.01 min (ae, gan@off)" in text
    for name in ("ae", "gan_off"):
        assert (tmp_path / "docs" / "zoo" / f"{name}.png").stat().st_size > 0
    results = json.loads((tmp_path / "docs" / "zoo.json").read_text())
    assert [r["entry"] for r in results] == ["vae", "ae", "gan@off"]
    assert results[0] == PREVIOUS_VAE
    for r in results[1:]:
        assert r["budget"] == 0.01 and r["commit"] != "abc1234"
        assert r["epochs"] >= 1 and r["minutes"] > 0 and r["images_per_s"] > 0
        assert len(r["fcd_by_epoch"]) == r["epochs"] and r["fcd"] > 0 and r["fcd_reference"] > 0
        assert os.path.exists(tmp_path / "runs" / r["entry"].replace("@", "_") / "eval.json")
    assert "linear_probe_accuracy" in results[1] and "linear_probe_accuracy" not in results[2]
    new_readme = readme.read_text()
    assert "old table" not in new_readme and rows[0] in new_readme
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
