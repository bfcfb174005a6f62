"""--jit_compile: whether the train step is compiled with XLA.

auto compiles where XLA pays: on GPUs. On CPUs it is off: XLA made the zoo's
DCGAN step 2.7x slower on the CPU of docs/benchmarks.md. Every model's step
compiles (tests/test_precision.py); XLA's stateless random numbers are not the
CPU kernels' (the same law, other numbers), so a compiled run does not repeat
an uncompiled one draw for draw."""

import tensorflow as tf

CHOICES = ("auto", "on", "off")


def decide(choice, gpus=None):
    """(jit_compile, the reason in words); gpus: the visible GPUs (looked up when None)."""
    if choice not in CHOICES:
        raise ValueError(f"jit_compile={choice!r} is not valid; choose one of: {', '.join(CHOICES)}")
    if choice != "auto":
        return choice == "on", f"--jit_compile={choice}"
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return True, f"{len(gpus)} GPU(s): XLA on"
    return False, "no GPU: XLA off (slower on CPUs)"
