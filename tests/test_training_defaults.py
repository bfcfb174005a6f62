"""One source of training defaults: train.run's optimizers are those that
compile() gives a `model.fit` user, for every model and every loss.
Regression test: --loss=wasserstein_gp once trained at 2e-4 from the command
line while compile() and README gave its 1e-4."""

import copy
import dataclasses

import pytest

import zoo
from train import run

run.define_flags()  # the command's flags, which these tests parse (copies of)


def cases():
    for name in zoo.names():
        field = {f.name: f for f in dataclasses.fields(zoo.get(name).Config)}.get("loss")
        for loss in (field.metadata.get("choices") or (field.default,)) if field else (None,):
            yield name, loss


def optimizer_settings(optimizers):
    keep = ("learning_rate", "beta_1", "beta_2", "epsilon")
    return {n: {k: round(float(o.get_config()[k]), 12) for k in keep if k in o.get_config()} for n, o in optimizers.items()}


@pytest.mark.parametrize("name,loss", list(cases()))
def test_train_run_and_compile_give_the_same_optimizers(name, loss, tmp_path):
    values = copy.deepcopy(run.FLAGS)
    values(["train.run", f"--model={name}", f"--workdir={tmp_path / 'w'}", *([f"--loss={loss}"] if loss else [])])
    _, config = run.resolve(values)
    cls = zoo.get(name)
    model = cls(image_shape=(8, 8, 1), num_classes=3, **config["model_options"])
    from_cli = optimizer_settings(model.compile_defaults(config["training"]["learning_rate"]))
    from_compile = optimizer_settings(model.compile_defaults())
    assert from_cli == from_compile


def test_wasserstein_gp_trains_at_its_own_rate_from_the_command_line(tmp_path):
    values = copy.deepcopy(run.FLAGS)
    values(["train.run", "--model=gan", f"--workdir={tmp_path / 'w'}", "--loss=wasserstein_gp"])
    _, config = run.resolve(values)
    assert config["training"]["learning_rate"] == 1e-4
    assert zoo.get("gan").training_defaults_for({"loss": "hinge"})["learning_rate"] == 2e-4
