"""--mixed_precision: Keras dtype policies for training.

bf16 is Keras's `mixed_bfloat16` (bfloat16 compute, float32 variables); every
zoo net keeps its output layer, and so every loss, in float32. auto picks bf16
where the CPU has bfloat16 units (AVX512-BF16 or AMX) and says so in the log."""

import keras
from absl import logging

CHOICES = ("off", "bf16", "auto")


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def apply(choice):
    """Sets the global dtype policy for `choice`; returns the policy's name."""
    if choice not in CHOICES:
        raise ValueError(f"mixed_precision={choice!r} is not valid; choose one of: {', '.join(CHOICES)}")
    use_bf16 = choice == "bf16" or (choice == "auto" and cpu_has_bf16())
    if choice == "auto":
        logging.warning("mixed precision auto: this CPU %s bfloat16 units", "has" if use_bf16 else "lacks")
    policy = "mixed_bfloat16" if use_bf16 else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
