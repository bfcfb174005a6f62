"""Exports as serving stacks see them: input checks inside the graphs (fed as TF
Serving feeds, in a process that never imports zoo), sampling on the server,
float32 graphs, Keras's TFSMLayer, warmup requests, model_config_list and ONNX.
Every check that runs an exported model runs in a process of its own without the
zoo (a child of the fork server: TensorFlow, Keras and TFP loaded; export.verify
is the check in a real interpreter)."""

import json
import os
import pickle
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import fork_server, run_module
from export import saved_model

HERE = os.path.dirname(os.path.abspath(__file__))


def build(name, image_shape, **options):
    return _compiled(zoo.build(name, image_shape=image_shape, num_classes=10, latent_dim=4, net="conv", **options))


def _compiled(model):
    model.compile(**model.compile_defaults())
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: version dir}: a 28x28 conv vae (its decoder's empty-batch quirk),
    an 8x8 conv cgan (conditional), an 8x8 vqvae (grids of code indices)."""
    base = str(tmp_path_factory.mktemp("serving"))
    return {
        # (verify=False: test_export checks the verification; these tests check in fresh processes themselves)
        "vae": saved_model.export(build("vae", (28, 28, 1), sampler="prior"), base, "vae", verify=False),
        "cgan": saved_model.export(build("cgan", (8, 8, 1)), base, "cgan", verify=False),
        "vqvae": saved_model.export(_compiled(zoo.build("vqvae", image_shape=(8, 8, 1), codebook_size=8, prior_filters=8,
                                                        prior_layers=2)), base, "vqvae", verify=False),
    }


def probe(models, tmp_path):
    """Results of serving_probe.py on [(version dir, cases), ...] in one process of its own, a list of
    results per model; asserts it lived."""
    cases_path = tmp_path / "cases.pkl"
    cases_path.write_bytes(pickle.dumps(models))
    proc = fork_server()([os.path.join(HERE, "serving_probe.py"), cases_path], timeout=300, kind="script")
    assert proc.returncode == 0, proc.stderr[-3000:]  # no abort, whatever the input
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "alive"
    results = [json.loads(line) for line in lines[-1 - sum(len(c) for _, c in models):-1]]
    out = []
    for _, cases in models:
        out.append(results[:len(cases)])
        results = results[len(cases):]
    return out


f32, i32 = np.float32, np.int32
Z, LABELS = np.zeros((2, 4), f32), np.array([1, 2], i32)
IMAGES28 = np.full((2, 28, 28, 1), 0.5, f32)

# (request, what the error message says)
BAD_VAE = [
    (("encode", {"images": np.zeros((4, 28, 28), f32)}), r"input images must have shape \[batch, 28, 28, 1\]"),
    (("reconstruct", {"images": np.zeros((4, 8, 8, 1), f32)}), r"input images must have shape"),
    (("encode", {"images": np.zeros((2, 28, 28, 1, 1), f32)}), r"input images must have shape"),
    (("encode", {"images": IMAGES28 * 255}), r"input images must be in \[0, 1\]"),
    (("reconstruct", {"images": -IMAGES28}), r"input images must be in \[0, 1\]"),
    (("encode", {"images": np.where(IMAGES28 > 0, np.nan, 0).astype(f32)}), r"input images must be finite"),
    (("generate", {"z": np.zeros((2, 5), f32)}), r"input z must have shape \[batch, 4\]"),
    (("generate", {"z": np.zeros((4,), f32)}), r"input z must have shape"),
    (("decode", {"z": np.full((2, 4), np.nan, f32)}), r"input z must be finite"),
    (("generate", {"z": np.full((2, 4), np.inf, f32)}), r"input z must be finite"),
    (("generate", {"z": np.zeros((2, 4), i32)}), r"float"),  # dtype: the runtime's own check
    (("sample", {"num_samples": i32(-1), "seed": i32(0)}), r"input num_samples must be in \[0, 1024\]"),
    (("sample", {"num_samples": i32(10**9), "seed": i32(0)}), r"input num_samples must be in"),
    (("sample", {"num_samples": i32(2), "seed": np.array([1, 2], i32)}), r"input seed must be a scalar"),
]
BAD_CGAN = [
    (("generate", {"z": Z, "labels": np.array([1, 10], i32)}), r"input labels must be class indices in \[0, 10\)"),
    (("generate", {"z": Z, "labels": np.array([-1, 1], i32)}), r"input labels must be class indices"),
    (("generate", {"z": Z, "labels": np.array([1, 10**9], i32)}), r"input labels must be class indices"),
    (("generate", {"z": Z, "labels": np.array([1, 2, 3], i32)}), r"inputs z and labels must have the same number"),
    (("discriminate", {"images": np.zeros((2, 8, 8), f32), "labels": LABELS}), r"input images must have shape"),
    (("sample", {"num_samples": i32(3), "seed": i32(0), "labels": LABELS}),
     r"inputs labels and num_samples must have the same number"),
]
CODES = np.zeros((2, 4, 4), i32)
BAD_VQVAE = [
    (("decode", {"codes": np.full((2, 4, 4), 8, i32)}), r"input codes must be code indices in \[0, 8\)"),
    (("decode", {"codes": -np.ones((2, 4, 4), i32)}), r"input codes must be code indices"),
    (("decode", {"codes": np.zeros((2, 16), i32)}), r"input codes must have shape \[batch, 4, 4\]"),
    (("decode", {"codes": np.zeros((2, 4, 4), f32)}), r"int32"),  # dtype: the runtime's own check
    (("generate", {"z": np.zeros((2, 4), f32)}), r"input z must have shape \[batch, 16\]"),
]
GOOD_VQVAE = [
    (("decode", {"codes": CODES}), {"images": [2, 8, 8, 1]}),
    (("decode", {"codes": np.zeros((0, 4, 4), i32)}), {"images": [0, 8, 8, 1]}),
    (("encode", {"images": np.zeros((2, 8, 8, 1), f32)}), {"codes": [2, 4, 4]}),
    (("generate", {"z": np.zeros((3, 16), f32)}), {"images": [3, 8, 8, 1]}),
    (("sample", {"num_samples": i32(2), "seed": i32(1)}), {"images": [2, 8, 8, 1]}),
]
# (request, the shapes of the answer)
GOOD_VAE = [
    (("generate", {"z": Z}), {"images": [2, 28, 28, 1]}),
    (("generate", {"z": np.zeros((0, 4), f32)}), {"images": [0, 28, 28, 1]}),  # conv decoders alone: [0, 8, 8, 32]
    (("encode", {"images": np.zeros((0, 28, 28, 1), f32)}), {"z": [0, 4], "z_stddev": [0, 4]}),
    (("sample", {"num_samples": i32(0), "seed": i32(0)}), {"images": [0, 28, 28, 1]}),
    (("sample", {"num_samples": np.array([3], i32), "seed": np.array([7], i32)}),  # REST's row format
     {"images": [3, 28, 28, 1]}),
    (("sample_png", {"num_samples": i32(2), "seed": i32(0)}), {"png_bytes": [2]}),
    (("encode", {"images": IMAGES28 + 5e-4}), {"z": [2, 4], "z_stddev": [2, 4]}),  # within [0, 1]'s tolerance
]
GOOD_CGAN = [
    (("generate", {"z": np.zeros((0, 4), f32), "labels": np.zeros([0], i32)}), {"images": [0, 8, 8, 1]}),
    (("sample", {"num_samples": i32(2), "seed": i32(0), "labels": LABELS}), {"images": [2, 8, 8, 1]}),
]


@pytest.fixture(scope="module")
def answers(exported, tmp_path_factory):
    """{case list: what the exports answered to each request}, all from one process of its own."""
    lists = {"bad vae": ("vae", BAD_VAE), "bad cgan": ("cgan", BAD_CGAN),
             "good vae": ("vae", GOOD_VAE), "good cgan": ("cgan", GOOD_CGAN),
             "bad vqvae": ("vqvae", BAD_VQVAE), "good vqvae": ("vqvae", GOOD_VQVAE)}
    results = probe([(exported[name], [c for c, _ in cases]) for name, cases in lists.values()],
                    tmp_path_factory.mktemp("probe"))
    return {key: list(zip(cases, result)) for (key, (_, cases)), result in zip(lists.items(), results)}


@pytest.mark.parametrize("model", ["vae", "cgan", "vqvae"])
def test_bad_inputs_get_an_invalid_argument_naming_the_input(answers, model):
    for (case, pattern), result in answers[f"bad {model}"]:
        assert result.get("error") == "InvalidArgumentError", (model, case[0], result)
        assert re.search(pattern, result["message"]), (model, case[0], result["message"])


@pytest.mark.parametrize("model", ["vae", "cgan", "vqvae"])
def test_good_and_empty_requests_answer_the_declared_shapes(answers, model):
    for (case, shapes), result in answers[f"good {model}"]:
        assert result.get("ok") == shapes, (model, case[0], result)


SAMPLE = r"""
import io, json, sys
import numpy as np, tensorflow as tf
from PIL import Image
m = tf.saved_model.load(sys.argv[1])
labels = tf.constant([3, 1, 4], tf.int32)
a = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant(11), labels=labels)["images"]
b = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant(11), labels=labels)["images"]
c = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant(12), labels=labels)["images"]
z = tf.random.stateless_normal([3, 4], seed=[11, 0])  # the documented noise of sample
g = m.signatures["generate"](z=z, labels=labels)["images"]
png = m.signatures["sample_png"](num_samples=tf.constant(3), seed=tf.constant(11), labels=labels)["png_bytes"]
pixels = np.stack([np.asarray(Image.open(io.BytesIO(p)))[..., None] for p in png.numpy()])
print(json.dumps({"same_seed": float(tf.reduce_max(tf.abs(a - b))), "other_seed": float(tf.reduce_max(tf.abs(a - c))),
                  "vs_generate": float(tf.reduce_max(tf.abs(a - g))),
                  "png_vs_images": float(np.abs(pixels / 255.0 - a.numpy()).max()), "png_dtype": str(pixels.dtype),
                  "zoo": "zoo" in sys.modules}))
"""


def test_sample_draws_on_the_server_as_generate_does(exported, tmp_path):
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE)
    proc = fork_server()([script, exported["cgan"]], timeout=300, kind="script")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same_seed"] == 0.0 and out["other_seed"] > 1e-3
    assert out["vs_generate"] < 1e-6  # sample == generate on stateless_normal([n, J], [seed, 0])
    assert out["png_vs_images"] <= 0.5 / 255 + 1e-6 and out["png_dtype"] == "uint8"
    assert out["zoo"] is False


TFSM = r"""
import inspect, json, sys
import keras, numpy as np, tensorflow as tf
vae, cgan = sys.argv[1:3]
out = {}
out["vae_default"] = list(keras.layers.TFSMLayer(vae)(np.zeros((2, 4), np.float32))["images"].shape)
out["vae_encode"] = sorted(keras.layers.TFSMLayer(vae, call_endpoint="encode")(np.zeros((2, 28, 28, 1), np.float32)))
layer = keras.layers.TFSMLayer(cgan)  # conditional: the first input positional, the others by name
out["cgan_default"] = list(layer(np.zeros((2, 4), np.float32), labels=np.array([1, 2], np.int32))["images"].shape)
sample = keras.layers.TFSMLayer(cgan, call_endpoint="sample")
out["cgan_sample"] = list(sample(np.int32(2), seed=np.int32(0), labels=np.array([1, 2], np.int32))["images"].shape)
m = tf.saved_model.load(cgan)
out["args"] = {n: list(inspect.signature(getattr(m, n)).parameters) for n in ("generate", "discriminate", "sample")}
out["zoo"] = "zoo" in sys.modules
print(json.dumps(out))
"""


def test_tfsm_layer_calls_every_endpoint_and_arguments_keep_their_names(exported, tmp_path):
    script = tmp_path / "tfsm.py"
    script.write_text(TFSM)
    proc = fork_server()([script, exported["vae"], exported["cgan"]], timeout=300, kind="script")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["vae_default"] == [2, 28, 28, 1] and out["vae_encode"] == ["z", "z_stddev"]
    assert out["cgan_default"] == out["cgan_sample"] == [2, 8, 8, 1]
    assert out["args"] == {"generate": ["z", "labels"], "discriminate": ["images", "labels"],
                           "sample": ["num_samples", "seed", "labels"]}
    assert out["zoo"] is False


def test_warmup_requests_cover_every_signature(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported["cgan"], "assets.extra", "tf_serving_warmup_requests")
    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
                for r in tf.data.TFRecordDataset(path)]
    assert sorted(r.model_spec.signature_name for r in requests) == [
        "discriminate", "generate", "sample", "sample_png"]
    generate = next(r for r in requests if r.model_spec.signature_name == "generate")
    assert generate.model_spec.name == "cgan" and sorted(generate.inputs) == ["labels", "z"]
    assert tf.make_ndarray(generate.inputs["z"]).shape == (1, 4)


def has_bfloat16(path):
    """Whether any node of a SavedModel's graph or its functions has a bfloat16 type attribute
    (read from saved_model.pb, as TF Serving loads it)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].graph_def
    found = set()
    for node in list(graph.node) + [n for f in graph.library.function for n in f.node_def]:
        for value in node.attr.values():
            found.update([value.type] if value.type else list(value.list.type))
    return types_pb2.DT_BFLOAT16 in found


def test_a_model_trained_in_bfloat16_serves_float32_graphs(tmp_path):
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build("dcgan", (8, 8, 1), ema_decay=0.9)
    finally:
        keras.config.set_dtype_policy(before)
    copy = saved_model.in_precision(model)
    assert copy is not model and {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    z = np.random.RandomState(0).randn(3, 4).astype(f32)
    assert np.abs(np.asarray(copy.generate(z)) - np.asarray(model.generate(z))).max() < 0.02  # same weights
    found = {}
    for precision in ("float32", "bfloat16"):
        path = saved_model.export(model, str(tmp_path / precision), "dcgan", serving_precision=precision,
                                  verify=precision == "float32")
        found[precision] = has_bfloat16(path)
    assert found == {"float32": False, "bfloat16": True}  # the check sees bf16 where there is some
    assert saved_model.in_precision(copy) is copy  # float32 already: no copy


def test_versions_must_be_non_negative_int64s_tf_serving_can_serve(tmp_path):
    model = build("cgan", (8, 8, 1))
    for version in (-1, 2**63, 10**20):
        with pytest.raises(saved_model.ExportError, match="version must be"):
            saved_model.export(model, str(tmp_path), "cgan", version=version, verify=False)
    assert not os.path.exists(tmp_path / "cgan")  # nothing written


def test_export_run_writes_the_model_config_list(exported, tmp_path):
    base = os.path.dirname(os.path.dirname(exported["vae"]))
    config = tmp_path / "models.config"
    proc = run_module("export.run", f"--export_base={base}", f"--model_config={config}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = config.read_text()
    assert text.startswith("model_config_list {") and text.count("config {") == len(exported)
    for name in exported:
        assert f'name: "{name}"' in text and f'base_path: "{os.path.join(os.path.abspath(base), name)}"' in text
    from tensorflow_serving.config import model_server_config_pb2
    from google.protobuf import text_format

    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())  # TF Serving's own parser
    assert [c.model_platform for c in parsed.model_config_list.config] == ["tensorflow"] * len(exported)
    with pytest.raises(saved_model.ExportError, match="no exported model under"):
        saved_model.model_config_list(str(tmp_path / "empty"))


@pytest.mark.parametrize("name, options, policy", [("vae", {"sampler": "prior"}, "float32"), ("cgan", {}, "float32"),
                                                   ("dcgan", {}, "mixed_bfloat16")])
def test_onnx_generate_matches_the_saved_model(name, options, policy, tmp_path):
    """mixed_bfloat16: a model trained in bf16 converts too (its export computes in float32).
    vae through the command line; the others through export.onnx.convert, which the command runs
    (tf2onnx converts in a process of its own either way)."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = zoo.build(name, image_shape=(8, 8, 1), num_classes=10, latent_dim=4, **options)
    finally:
        keras.config.set_dtype_policy(before)
    model.compile(**model.compile_defaults())
    path = saved_model.export(model, str(tmp_path), name, verify=False)
    if name == "vae":  # converted and run in ONNX Runtime by the CLI, a fresh process without the zoo
        proc = run_module("export.onnx", f"--export_dir={path}", "--signatures=generate", "--atol=1e-5", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == f"generate: converted, {path}.onnx/generate.onnx"
    else:
        from export import onnx

        assert onnx.convert(path, signatures=["generate"], atol=1e-5) == {"generate": None}
    assert os.path.exists(f"{path}.onnx/generate.onnx")


def test_onnx_says_what_does_not_convert(tmp_path):
    from export import onnx

    model = zoo.build("cgan", image_shape=(8, 8, 1), num_classes=10, latent_dim=4)
    path = saved_model.export(model, str(tmp_path), "cgan", verify=False)
    results = onnx.convert(path, str(tmp_path / "out"), signatures=["sample_png"])
    assert results == {"sample_png": "Unsupported ops: Counter({'EncodePng': 1})"}
    assert not os.listdir(tmp_path / "out")  # nothing kept that did not convert and match
    proc = run_module("export.onnx", f"--export_dir={path}", "--signatures=nope", timeout=120)
    assert proc.returncode == 2 and "has no signature nope" in proc.stderr.strip().splitlines()[-1]
