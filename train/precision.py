"""--mixed_precision: Keras dtype policies for training.

bf16 is Keras's `mixed_bfloat16` and fp16 its `mixed_float16` (16-bit compute,
float32 variables); every zoo net keeps its output layer, and so every loss, in
float32. Under fp16 every optimizer is a LossScaleOptimizer (dynamic loss
scaling: each step scales its loss, the optimizer unscales the gradients and
skips a step whose gradients overflow, halving the scale).

auto decides by the devices the run trains on, and says which one decided in
the log:
  GPUs of compute capability >= 8.0 (Ampere on): bf16;
  older GPUs (T4, V100, ...), which lack bfloat16 units: fp16;
  no GPU: bf16 where the CPU has bfloat16 units (AVX512-BF16 or AMX), else
  float32 (off)."""

import keras
import tensorflow as tf
from absl import logging

CHOICES = ("off", "bf16", "fp16", "auto")
POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
BF16_GPU_CAPABILITY = (8, 0)


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_capabilities():
    """[(name, (major, minor))] of the visible GPUs ((0, 0) when TF does not say)."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append((details.get("device_name", gpu.name), tuple(details.get("compute_capability", (0, 0)))))
    return found


def decide(choice, gpus=None, cpu_bf16=None, replicas=1):
    """(the choice auto stands for, the reason in words) for `choice`; gpus as
    gpu_capabilities() returns them and cpu_bf16 as cpu_has_bf16(), looked up
    when None; replicas: the strategy's replicas in sync.

    fp16 is for one replica: Keras's LossScaleOptimizer decides to skip or
    apply a step from the gradients it is given, which in the zoo's steps are
    each replica's own (Keras sums them inside apply), so replicas could decide
    apart. With several replicas auto never picks fp16 and fp16 is refused."""
    if choice not in CHOICES:
        raise ValueError(f"mixed_precision={choice!r} is not valid; choose one of: {', '.join(CHOICES)}")
    if choice == "fp16" and replicas > 1:
        raise ValueError(f"--mixed_precision=fp16 trains on one replica only, not {replicas}: its loss scaling "
                         f"decides per replica; use bf16 or off with this strategy")
    if choice != "auto":
        return choice, f"--mixed_precision={choice}"
    gpus = gpu_capabilities() if gpus is None else gpus
    if gpus:
        oldest_name, oldest = min(gpus, key=lambda g: g[1])
        if oldest >= BF16_GPU_CAPABILITY:
            return "bf16", f"the GPUs ({', '.join(n for n, _ in gpus)}) have compute capability >= 8.0"
        if replicas > 1:
            return "off", (f"the GPU {oldest_name} lacks bfloat16 units and fp16 is for one replica, "
                           f"not {replicas}")
        return "fp16", (f"the GPU {oldest_name} has compute capability {oldest[0]}.{oldest[1]} < 8.0 "
                        f"(no bfloat16 units)")
    cpu_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    if cpu_bf16:
        return "bf16", "no GPU; this CPU has bfloat16 units"
    return "off", "no GPU; this CPU lacks bfloat16 units"


def apply(choice, replicas=1):
    """Sets the global dtype policy for `choice`; returns the policy's name."""
    decided, reason = decide(choice, replicas=replicas)
    if choice == "auto":
        logging.warning("mixed precision auto: %s (%s)", POLICIES[decided], reason)
    keras.mixed_precision.set_global_policy(POLICIES[decided])
    return POLICIES[decided]
