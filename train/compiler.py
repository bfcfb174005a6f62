"""--jit_compile: whether the train step is compiled with XLA.

auto compiles where XLA pays: on GPUs, for one replica. On CPUs it depends on
the model (ZooModel.xla_pays_on_cpu, measured per model in docs/benchmarks.md):
XLA gives the conv autoencoders (ae, vae, cvae, aae) 1.5-1.7x the images/s of
their plain step and the adversarial models 1.3-1.8x (their dropout masks are
integer hashes XLA fuses: with tf.random's draws XLA made them 2-3x slower).
Under a distribution strategy of several replicas it is off too, as Keras's
own auto rule has it (a compiled step skips the strategy's merge_call, which
loss scaling's skip-or-apply needs on every replica alike). Every model's step
compiles (tests/test_precision.py); XLA's stateless random numbers are not the
CPU kernels' (the same law, other numbers), so a compiled run does not repeat
an uncompiled one draw for draw."""

import tensorflow as tf

CHOICES = ("auto", "on", "off")


def decide(choice, gpus=None, replicas=1, pays_on_cpu=False):
    """(jit_compile, the reason in words); gpus: the visible GPUs (looked up
    when None); replicas: the strategy's replicas in sync; pays_on_cpu: the
    model's step is faster with XLA on a CPU (ZooModel.xla_pays_on_cpu)."""
    if choice not in CHOICES:
        raise ValueError(f"jit_compile={choice!r} is not valid; choose one of: {', '.join(CHOICES)}")
    if choice != "auto":
        return choice == "on", f"--jit_compile={choice}"
    if replicas > 1:
        return False, f"{replicas} replicas: XLA off (as Keras's auto under a distribution strategy)"
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return True, f"{len(gpus)} GPU(s): XLA on"
    if pays_on_cpu:
        return True, "no GPU, and this model's step is faster with XLA on CPUs: XLA on"
    return False, "no GPU: XLA off (this model's step is slower with XLA on CPUs)"
