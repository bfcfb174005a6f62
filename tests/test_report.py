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


def test_report_trains_evaluates_and_writes_the_tables(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "docs" / "zoo.md"
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
    for name in ("ae", "gan_off"):
        assert (tmp_path / "docs" / "zoo" / f"{name}.png").stat().st_size > 0
    results = json.loads((tmp_path / "docs" / "zoo.json").read_text())
    assert [r["entry"] for r in results] == ["ae", "gan@off"]
    for r in results:
        assert r["epochs"] >= 1 and r["minutes"] > 0 and r["images_per_s"] > 0
        assert len(r["fcd_by_epoch"]) == r["epochs"] and r["fcd"] > 0 and r["fcd_reference"] > 0
        assert os.path.exists(tmp_path / "runs" / r["entry"].replace("@", "_") / "eval.json")
    assert "linear_probe_accuracy" in results[0] and "linear_probe_accuracy" not in results[1]
    new_readme = readme.read_text()
    assert "old table" not in new_readme and rows[0] in new_readme
    assert new_readme.startswith("# project\n\nbefore\n") and new_readme.endswith("after\n")


def test_unknown_model_is_a_one_line_error(tmp_path):
    proc = run_module("train.report", "--models=vae,nosuch", f"--out={tmp_path / 'zoo.md'}", "--readme=")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nosuch' in --models; choose from: aae")
    assert "Traceback" not in proc.stderr
