"""python serving_probe.py CASES.pkl

Feeds SavedModel signatures as TF Serving does: the graph loaded into a C++
session and each request's tensors fed to the signature's placeholders with no
Python shape or dtype checks (TF Serving compares nothing against the declared
TensorSpecs). Imports TensorFlow only, never zoo (run from the fork server, whose
children have Keras and TFP loaded too). CASES.pkl holds a list of
(SavedModel directory, [(signature, {input: numpy array}), ...]); prints one
JSON line per case, in order, {"ok": shapes} or {"error": class, "message":
first line}, then "alive"."""

import json
import pickle
import sys

import tensorflow as tf


def main(cases_path):
    assert "zoo" not in sys.modules
    with open(cases_path, "rb") as fh:
        models = pickle.load(fh)
    for path, cases in models:
        probe(path, cases)
    print("alive")


def probe(path, cases):
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        graph = sess.graph
        for signature, feeds in cases:
            sig = meta.signature_def[signature]
            feed = {graph.get_tensor_by_name(sig.inputs[k].name)._as_tf_output(): v for k, v in feeds.items()}
            names = sorted(sig.outputs)
            fetch = [graph.get_tensor_by_name(sig.outputs[k].name)._as_tf_output() for k in names]
            try:
                out = sess._call_tf_sessionrun(None, feed, fetch, [], None)
                print(json.dumps({"ok": {k: list(v.shape) for k, v in zip(names, out)}}))
            except tf.errors.OpError as e:
                print(json.dumps({"error": type(e).__name__, "message": str(e).splitlines()[0]}))


if __name__ == "__main__":
    main(sys.argv[1])
