"""Evaluate a trained run: python -m train.evaluate --workdir=W

Prints one JSON line (and writes W/eval.json). Sample quality is measured in
the feature space of a small CNN classifier trained on the dataset's train
split (pretrained Inception weights cannot be downloaded here; for digits a
domain classifier is the standard substitute), cached per dataset:
  fcd            Frechet classifier distance, test images vs generated images
  fcd_reference  the same distance between test images and as many train images:
                 the floor a perfect generator would reach
  fcd_ratio      fcd / fcd_reference (1 for a perfect generator)
  precision, recall (k-NN manifolds, k = 3), density and coverage (k = 5),
  class_histogram and its entropy,
  train_distance_ratio  a replay check: the median pixel distance of the
                 samples to their nearest train image over that of the test
                 images (about 1 when the model generalises, near 0 when it
                 copies its training images),
  conditional_accuracy for conditional models,
  category_accuracy for models with a categorical code (InfoGAN, the
                 semi-supervised AAE): the best-permutation agreement of the
                 code with the classifier's class of the images it generates.
Semi-supervised models (ssaae) add classification_error, the share of test
images their classifier q(y | x) gets wrong (with labelled=0, through the
best one-to-one map of its categories to the classes), and `labelled`, the
labelled train images it learnt from.
Data without labels (an unlabelled folder, CelebA) has no such classifier: it
gets a `note` saying so and, when Keras can load InceptionV3's ImageNet
weights, fid, kid and their floors fid_reference and kid_reference in
Inception's features (else `inception_note`, saying how to get the weights).
Models with an encoder add linear_probe_accuracy (a logistic regression on the
codes of the train split, scored on the test split), beside it
linear_probe_pixels (the same probe on the raw pixels of the same split: what
the codes must beat; it depends only on the dataset, so it is cached beside the
classifier), reconstruction_mse and code statistics. Models with a likelihood
(the VAEs) add the ELBO and the importance-weighted bound (IWAE, K =
--iwae_k draws) on the test split, in nats per image, higher is better, named
for what they bound (bound_names):
  elbo, iwae     log p(x): a normalised likelihood of the scored images, the
                 continuous Bernoulli or the Gaussian on grey levels, or the
                 Bernoulli on binarised images (binarize=dynamic: the test split
                 binarised once, with a fixed seed); with binarize=dynamic also
                 nll_nats = -iwae, the figure the VAE and IWAE papers print;
                 with the discretised logistic, log P(x) of the test split at
                 its nearest 8-bit levels k / 255 (bound_kind discrete_8bit),
                 and beside them bpd = -iwae / (D ln 2), D = H W C, the
                 figure the papers of 8-bit images print, and elbo_bpd;
  ..._unnormalised  the Bernoulli pmf on grey levels, which is not a density
                 on [0, 1] (it integrates to 1/2 or less): a training objective,
                 not a log-likelihood;
  ..._conditional   log p(x | y) of conditional models (the CVAE), not log p(x).
and beside them active_units: the latent dimensions whose posterior mean
E_q[z_j | x] varies across the scored test images with a variance above 0.01
(Burda et al. 2016; metrics.active_units); the others carry nothing of x.
"""

import contextlib
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402,F401  (registers the model classes for load_model)
from train import cli  # noqa: E402
from train import data  # noqa: E402
from train import workdir as workdirs  # noqa: E402
from zoo import distributions, metrics, samplers  # noqa: E402

FLAGS = flags.FLAGS
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "genzoo")


def define_flags():
    """The command's flags, defined only when it runs as a program, so that
    train.run, train.report and train.explore can import this module."""
    flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras", required=True)
    flags.DEFINE_integer("num_samples", 500, "generated images to compare with the test split")
    flags.DEFINE_integer("seed", 0, "seed of the generated batch")
    flags.DEFINE_string("cache_dir", CACHE_DIR, "where classifiers are cached")
    flags.DEFINE_enum("sampler", None, list(samplers.SAMPLERS), "latent sampler of generated images (default: the model's)")
    flags.DEFINE_integer("iwae_k", IWAE_K, "draws per image of the importance-weighted bound (the papers' NLL: 5000)")
    flags.DEFINE_integer("iwae_images", None, "score the likelihood bounds on the first N test images only "
                         "(default: all; K = 5000 costs ~6 CPU-s per image)")
    flags.DEFINE_integer("sampler_components", None, "refit the run's gmm sampler with this many Gaussians "
                         "(its weights otherwise as trained) and evaluate that, to choose K without retraining")
    flags.DEFINE_integer("sampler_seed", None, "with --sampler_components: the EM fit's seed (default: the model's)")
    flags.DEFINE_enum("weights", "average", ["average", "raw"], "average: the moving averages that generate serves "
                      "(models with --ema_decay > 0); raw: the trained weights themselves, to measure the average")


IWAE_K = 64


class EvaluationError(RuntimeError):
    pass


PROBE_ROWS = 10000  # of each split, for the pixels' linear probe
UNLABELLED_NOTE = ("{dataset} has no labels: fcd, precision, recall, density, coverage and the class histogram are "
                   "measured with a classifier of its classes (a folder needs one subfolder per class)")


def classifier(dataset, cache_dir, epochs=6, seed=0):
    """(model returning [features, logits], its test accuracy), trained once per
    dataset and cached; always float32, whatever the global dtype policy, so
    that every figure is measured with the same features. Training it reseeds
    the global RNGs (train.run builds it before seeding its own run)."""
    if dataset.num_classes < 2:
        raise EvaluationError(UNLABELLED_NOTE.format(dataset=dataset.name))
    shape = "x".join(map(str, dataset.image_shape))
    path = os.path.join(cache_dir, f"classifier-{dataset.key}-{shape}.keras")
    if os.path.exists(path) and os.path.exists(path + ".json"):
        with open(path + ".json") as fh:
            return keras.models.load_model(path), json.load(fh)["test_accuracy"]
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return _train_classifier(dataset, path, epochs, seed)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _train_classifier(dataset, path, epochs, seed):
    keras.utils.set_random_seed(seed)
    x = keras.Input(dataset.image_shape)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    features = keras.layers.Dense(128, activation="relu", name="features")(h)
    logits = keras.layers.Dense(dataset.num_classes, name="logits")(keras.layers.Dropout(0.3)(features))
    model = keras.Model(x, [features, logits])
    train = keras.Model(x, logits)
    train.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if isinstance(dataset.train_images, np.ndarray):
        train.fit(dataset.train_images, dataset.train_labels, batch_size=64, epochs=epochs, verbose=0)
    else:  # data.Images: streamed from its uint8 file, never all floats at once
        steps = len(dataset.train_images) // 64
        train.fit(data.training_pipeline(dataset.train_images, dataset.train_labels, 64, seed, 0, epochs * steps),
                  epochs=epochs, steps_per_epoch=steps, verbose=0)
    accuracy = float(train.evaluate(dataset.test_images[:], dataset.test_labels, verbose=0)[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with workdirs.atomic_path(path, ".keras") as tmp:
        model.save(tmp)
    workdirs.write_json(path + ".json", {"test_accuracy": accuracy})
    return model, accuracy


def pixel_probe_accuracy(dataset, cache_dir):
    """metrics.linear_probe_accuracy on the flattened raw pixels of the train
    and test splits (at most PROBE_ROWS of each): the baseline of the codes'
    probe. Computed once per dataset and cached beside its classifier."""
    shape = "x".join(map(str, dataset.image_shape))
    path = os.path.join(cache_dir, f"pixel-probe-{dataset.key}-{shape}.json")
    sizes = {"train": min(len(dataset.train_images), PROBE_ROWS), "test": min(len(dataset.test_images), PROBE_ROWS)}
    try:
        with open(path) as fh:
            cached = json.load(fh)
        if cached.get("sizes") == sizes:  # a changed split is measured afresh
            return float(cached["accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    accuracy = metrics.linear_probe_accuracy(
        dataset.train_images[: sizes["train"]].reshape(sizes["train"], -1), dataset.train_labels[: sizes["train"]],
        dataset.test_images[: sizes["test"]].reshape(sizes["test"], -1), dataset.test_labels[: sizes["test"]],
    )
    os.makedirs(cache_dir, exist_ok=True)
    workdirs.write_json(path, {"accuracy": accuracy, "sizes": sizes})
    return accuracy


def _batched(fn, *arrays, batch=250):
    outs = [fn(*(a[i : i + batch] for a in arrays)) for i in range(0, len(arrays[0]), batch)]
    if isinstance(outs[0], (tuple, list)):
        return [np.concatenate([np.asarray(o[j]) for o in outs]) for j in range(len(outs[0]))]
    return np.concatenate([np.asarray(o) for o in outs])


def generated(model, z, labels=None, sampler=None):
    """model.generate(z[, labels][, sampler]) in batches, as numpy."""
    kwargs = {"sampler": sampler} if sampler else {}
    if labels is not None:
        return _batched(lambda a, b: model.generate(a, labels=b, **kwargs), z, labels)
    return _batched(lambda a: model.generate(a, **kwargs), z)


def reference_images(dataset, n, seed=0):
    """The n train images every model's floor is measured with (the same
    subset whatever the model), in file order."""
    pick = np.random.RandomState(seed + 1).choice(len(dataset.train_images), n, replace=False)
    return dataset.train_images[np.sort(pick)]


def generated_samples(model, dataset, n, seed=0, sampler=None):
    """(n generated images, their labels or None): z ~ N(0, I) from `seed`,
    conditional models asked for the first n test labels."""
    z = np.random.RandomState(seed).randn(n, model.latent_dim).astype(np.float32)
    labels = dataset.test_labels[:n] if model.conditional else None
    return generated(model, z, labels, sampler), labels


def frechet_reference(clf, dataset, real_features, seed=0):
    """The FCD between the test features and as many train images: the floor a
    perfect generator would reach (the same train subset whatever the model)."""
    ref_f = _batched(lambda a: clf(a, training=False)[0], reference_images(dataset, len(real_features), seed))
    return metrics.frechet_feature_distance(real_features, ref_f)


def evaluate(model, dataset, cache_dir, num_samples=500, seed=0, sampler=None, iwae_k=IWAE_K, iwae_images=None):
    """The figures of the module docstring, as a dict; `sampler` picks the
    latent sampler of models with an encoder (default: the model's). Data
    without labels gets, instead of the classifier's figures, a `note` saying
    why, and the figures that need no classifier."""
    if sampler and not model.can("fitted_sampler"):
        raise EvaluationError(f"--sampler is for models with fitted samplers ({', '.join(zoo.names('fitted_sampler'))}), "
                              f"not {model.name}")
    out = {"dataset": dataset.name}
    if dataset.num_classes >= 2:
        out.update(sample_figures(model, dataset, cache_dir, num_samples, seed, sampler))
    else:
        out["note"] = UNLABELLED_NOTE.format(dataset=dataset.name)
        out.update(inception_figures(model, dataset, num_samples, seed, sampler))
    if model.can("encoder"):
        out.update(_encoder_figures(model, dataset, cache_dir))
    if model.can("likelihood"):
        out.update(likelihood_figures(model, dataset, seed, iwae_k, iwae_images))
    if model.can("semi_supervised") and dataset.num_classes >= 2:
        out.update(classification_figures(model, dataset))
    return out


def classification_figures(model, dataset):
    """A semi-supervised model's classification_error, the share of test
    images whose argmax q(y | x) is not their label, and `labelled`, the
    labelled train images it learnt from. Without labelled images (its
    categories unsupervised clusters, in no order) the error is that of the
    best one-to-one map from categories to classes."""
    predicted = _batched(lambda a: tf.argmax(model.classify(a), axis=-1), dataset.test_images)
    if not model.labelled_count:
        error = 1.0 - metrics.best_permutation_accuracy(predicted, dataset.test_labels)
    else:
        error = float((predicted != dataset.test_labels).mean())
    return {"classification_error": float(error), "labelled": model.labelled_count}


def sample_figures(model, dataset, cache_dir, num_samples=500, seed=0, sampler=None):
    """The figures of generated images in the evaluation classifier's feature
    space: FCD (and its floor), precision, recall, density, coverage, the
    class histogram and, for conditional models, conditional_accuracy."""
    clf, clf_accuracy = classifier(dataset, cache_dir)
    n = min(num_samples, len(dataset.test_images))
    real = dataset.test_images[:n]
    fake, labels = generated_samples(model, dataset, n, seed, sampler)
    real_f, _ = _batched(lambda a: clf(a, training=False), real)
    fake_f, fake_logits = _batched(lambda a: clf(a, training=False), fake)
    predicted = fake_logits.argmax(1)
    precision, recall = metrics.precision_recall(real_f, fake_f)
    density, coverage = metrics.density_coverage(real_f, fake_f)
    histogram, entropy = metrics.class_histogram(predicted, dataset.num_classes)
    fcd = metrics.frechet_feature_distance(real_f, fake_f)
    fcd_reference = frechet_reference(clf, dataset, real_f, seed)
    out = {
        "num_samples": n,
        "classifier_test_accuracy": round(clf_accuracy, 4),
        "fcd": fcd,
        "fcd_reference": fcd_reference,
        "fcd_ratio": fcd / fcd_reference,
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "class_histogram": [round(p, 4) for p in histogram],
        "class_entropy": entropy,
        "train_distance_ratio": metrics.train_distance_ratio(fake, real, dataset.train_images),
    }
    if labels is not None:
        out["conditional_accuracy"] = float((predicted == labels).mean())
    if model.can("categorical_code"):
        out["category_accuracy"] = category_accuracy(model, clf, n, seed)
    return out


def category_accuracy(model, clf, n, seed=0):
    """How well a categorical code (InfoGAN's, the semi-supervised AAE's) names
    the classes: n draws of the prior, category i mod K for draw i (model.with_category),
    classified by the evaluation classifier; the best-permutation accuracy of
    category against class (metrics.best_permutation_accuracy)."""
    z = np.random.RandomState(seed + 2).randn(n, model.latent_dim).astype(np.float32)
    categories = np.arange(n) % model.categories
    z = _batched(lambda a, b: model.with_category(a, b), z, categories)
    # with_category sets the code of the prior's z: a model that also has fitted samplers draws from its prior here
    sampler = "prior" if model.can("fitted_sampler") else None
    _, logits = _batched(lambda a: clf(a, training=False), generated(model, z, sampler=sampler))
    return metrics.best_permutation_accuracy(categories, logits.argmax(1))


INCEPTION_NOTE = ("fid and kid need InceptionV3's ImageNet weights, which Keras could not load ({error}); on a "
                  "machine without internet, copy {file} into ~/.keras/models/ and evaluate again")
INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def inception_features():
    """images in [0, 1] [n, H, W, 1 or 3] -> InceptionV3's 2048 pooled features
    (its ImageNet weights, from Keras's cache or downloaded); raises what Keras
    raises when it cannot load them."""
    net = keras.applications.InceptionV3(include_top=False, pooling="avg", weights="imagenet",
                                         input_shape=(299, 299, 3))

    def features(images):
        x = tf.image.resize(tf.convert_to_tensor(images, tf.float32), (299, 299))
        if x.shape[-1] == 1:
            x = tf.tile(x, [1, 1, 1, 3])
        return net(x * 2.0 - 1.0, training=False)  # Inception's preprocessing: [-1, 1]

    return features


def inception_figures(model, dataset, num_samples=500, seed=0, sampler=None, features=None):
    """For data without labels, the standard figures in InceptionV3's features
    (Heusel et al. 2017; Binkowski et al. 2018): fid and kid between the test
    images and as many generated ones, and their floor fid_reference (the test
    images against as many train images). Without the weights: `inception_note`
    saying how to get them. `features`: images -> features (default
    inception_features())."""
    if features is None:
        try:
            features = inception_features()
        except Exception as e:  # Keras raises a bare Exception when the download fails
            return {"inception_note": INCEPTION_NOTE.format(error=str(e).splitlines()[0][:200], file=INCEPTION_FILE)}
    n = min(num_samples, len(dataset.test_images))
    real_f = _batched(features, dataset.test_images[:n], batch=50)
    fake_f = _batched(features, generated_samples(model, dataset, n, seed, sampler)[0], batch=50)
    ref_f = _batched(features, reference_images(dataset, n, seed), batch=50)
    fid, fid_reference = metrics.frechet_feature_distance(real_f, fake_f), metrics.frechet_feature_distance(real_f, ref_f)
    return {"num_samples": n, "fid": fid, "fid_reference": fid_reference, "fid_ratio": fid / fid_reference,
            "kid": metrics.kernel_distance(real_f, fake_f, subset_size=min(n, 1000), seed=seed),
            "kid_reference": metrics.kernel_distance(real_f, ref_f, subset_size=min(n, 1000), seed=seed)}


def bound_names(model):
    """{"elbo": name, "iwae": name, "nll": name or None, "bpd": name or None,
    "elbo_bpd": name or None}: the names of the model's bounds in evaluate's
    output (see the module docstring), from model.bound_kind and whether it is
    conditional."""
    conditional = "_conditional" if model.conditional else ""
    unnormalised = "_unnormalised" if model.bound_kind == "unnormalised" else ""
    discrete = model.bound_kind == "discrete_8bit"
    return {"elbo": f"elbo{conditional}{unnormalised}", "iwae": f"iwae{conditional}{unnormalised}",
            "nll": f"nll{conditional}_nats" if model.bound_kind == "binary" else None,
            "bpd": f"bpd{conditional}" if discrete else None,
            "elbo_bpd": f"elbo{conditional}_bpd" if discrete else None}


def likelihood_figures(model, dataset, seed=0, iwae_k=IWAE_K, iwae_images=None):
    """The ELBO (one draw per image) and the IWAE bound (iwae_k draws) averaged
    over the test split as the model scores it (model.evaluation_images), or
    its first `iwae_images` images, under the names of bound_names, with iwae_k
    and the number of images scored (iwae_images); for a pmf over 8-bit levels
    both also in bits per dimension; and the active units of the posterior
    means of the whole split's images."""
    names = bound_names(model)
    n = len(dataset.test_images) if iwae_images is None else min(iwae_images, len(dataset.test_images))
    # evaluation_images binarises the whole split with one seed, so a subset's images are the full split's
    scored = model.evaluation_images(dataset.test_images[:]).numpy()
    images = scored[:n]
    labels = dataset.test_labels[:n]
    rec, kl = _batched(lambda a, b: model.elbo_terms(a, b, seed=tf.constant([seed, 0])), images, labels)
    out = {names["elbo"]: float(-(rec + kl).mean())}
    draw = tf.constant([seed, 1])
    batch = max(1, min(50, 3200 // iwae_k))  # K draws of every image of a batch at once
    bound = _batched(lambda a, b: model.iwae_bound(a, b, k=iwae_k, seed=draw), images, labels, batch=batch)
    out[names["iwae"]], out["iwae_k"], out["bound_kind"] = float(bound.mean()), iwae_k, model.bound_kind
    out["iwae_images"] = n
    # encode is the posterior mean E_q[z|x] of a model with a likelihood bound
    out["active_units"] = metrics.active_units(model.encode_all(scored, dataset.test_labels))
    if names["nll"]:
        out[names["nll"]] = -out[names["iwae"]]
    if names["bpd"]:
        dimensions = int(np.prod(images.shape[1:]))
        out[names["bpd"]] = distributions.bits_per_dimension(out[names["iwae"]], dimensions)
        out[names["elbo_bpd"]] = distributions.bits_per_dimension(out[names["elbo"]], dimensions)
    return out


def _encoder_figures(model, dataset, cache_dir):
    """The codes' figures; the linear probes only where there are labels."""
    train_codes = model.encode_all(dataset.train_images, dataset.train_labels)
    test_codes = model.encode_all(dataset.test_images, dataset.test_labels)
    # per image, so that no float copy of the whole split is held
    squared = _batched(lambda a, b: tf.reduce_mean((model.reconstruct(a, labels=b) - a) ** 2, axis=[1, 2, 3]),
                       dataset.test_images, dataset.test_labels)
    out = {"reconstruction_mse": float(squared.mean()), **metrics.code_statistics(train_codes)}
    if dataset.num_classes >= 2:
        out = {
            "linear_probe_accuracy": metrics.linear_probe_accuracy(
                train_codes, dataset.train_labels, test_codes, dataset.test_labels
            ),
            "linear_probe_pixels": pixel_probe_accuracy(dataset, cache_dir),
            **out,
        }
    return out


class QualityClock(keras.callbacks.Callback):
    """Time to quality: after every epoch, the training minutes so far (the
    wall time of the epochs, with their checkpoints and sample grids, but not
    this clock's own evaluation) and the FCD of `num_samples` generated
    images against the test split, added to the epoch's logs as `minutes` and
    `fcd` (so History and history.csv keep them), and `fcd_reference`, the
    floor. Also stops training at the end of the first epoch that ends past
    `max_minutes` of training, if given."""

    def __init__(self, dataset, cache_dir, num_samples=500, seed=0, max_minutes=None, track_fcd=True):
        super().__init__()
        self.dataset, self.seed = dataset, seed
        self.max_minutes, self.track_fcd = max_minutes, track_fcd
        self.minutes = 0.0  # of training, carried across fit calls
        self.n = min(num_samples, len(dataset.test_images))
        if track_fcd:  # here, not in on_train_begin: training the classifier reseeds the RNGs
            self._clf, _ = classifier(dataset, cache_dir)
            self._real = _batched(lambda a: self._clf(a, training=False)[0], dataset.test_images[: self.n])
            self._reference = frechet_reference(self._clf, dataset, self._real, seed)

    def on_train_begin(self, logs=None):
        self._since = time.perf_counter()
        if self.track_fcd and not hasattr(self, "_z"):
            self._z = np.random.RandomState(self.seed).randn(self.n, self.model.latent_dim).astype(np.float32)
            self._labels = self.dataset.test_labels[: self.n] if self.model.conditional else None

    def on_epoch_end(self, epoch, logs=None):
        self.minutes += (time.perf_counter() - self._since) / 60.0
        logs = logs if logs is not None else {}
        logs["minutes"] = self.minutes
        if self.track_fcd:
            self._fit_sampler()
            fake = generated(self.model, self._z, self._labels)
            fake_f = _batched(lambda a: self._clf(a, training=False)[0], fake)
            logs["fcd"] = metrics.frechet_feature_distance(self._real, fake_f)
            logs["fcd_reference"] = self._reference
        if self.out_of_time():
            self.model.stop_training = True
        self._since = time.perf_counter()

    def _fit_sampler(self):
        """Fits the latent sampler of a model whose generate() decodes a sampler
        fitted to the training codes (as train.run does after training), so the
        FCD of every epoch measures what a run stopped there would give."""
        if self.model.can("fitted_sampler") and self.model.config.sampler != "prior":
            self.model.try_fit_sampler(self.dataset.train_images, self.dataset.train_labels)

    def out_of_time(self):
        return self.max_minutes is not None and self.minutes >= self.max_minutes


def load_run(workdir):
    """(model, config, dataset) of a train.run workdir (train.workdir.load_trained)."""
    try:
        model, config = workdirs.load_trained(workdir)
        dataset = data.load_config(config)
    except (workdirs.WorkdirError, data.DatasetError) as e:
        raise EvaluationError(str(e)) from None
    except KeyError as e:
        raise EvaluationError(f"{workdir}/config.json has no {e} entry; restore it from the run or retrain") from None
    return model, config, dataset


def evaluate_workdir(workdir, cache_dir=CACHE_DIR, num_samples=500, seed=0, sampler=None, weights="average",
                     iwae_k=IWAE_K, iwae_images=None, sampler_components=None, sampler_seed=None):
    """evaluate() of the run in `workdir`; also written to W/eval.json (W/eval-<sampler>.json
    for another sampler than the model's, W/eval-raw.json for the raw weights,
    W/eval-gmm<K>[-seed<S>].json for a refitted sampler of K components)."""
    model, config, dataset = load_run(workdir)
    refit = ""
    if sampler_components is not None:
        if not model.can("fitted_sampler"):
            raise EvaluationError(f"--sampler_components refits the sampler of models with fitted samplers "
                                  f"({', '.join(zoo.names('fitted_sampler'))}), not {config['model']}")
        try:
            model = samplers.refitted(model, dataset.train_images, dataset.train_labels, sampler_components,
                                      sampler_seed)
        except ValueError as e:
            raise EvaluationError(str(e).splitlines()[0]) from None
        refit = f"-gmm{sampler_components}" + (f"-seed{sampler_seed}" if sampler_seed is not None else "")
    raw = weights == "raw"
    if raw and not model.uses_average:
        raise EvaluationError(f"--weights=raw compares with a moving average: {config['model']} in {workdir} "
                              f"was trained without one (--ema_decay=0)")
    with model.raw_weights() if raw else contextlib.nullcontext():
        result = {"model": config["model"], **evaluate(model, dataset, cache_dir, num_samples, seed, sampler, iwae_k,
                                                           iwae_images)}
    if sampler:
        result["sampler"] = sampler
    if raw:
        result["weights"] = "raw"
    if refit:
        result["sampler_components"] = sampler_components
        result["sampler_seed"] = model.seed
    name = "eval" + (f"-{sampler}" if sampler else "") + refit + ("-raw" if raw else "") + ".json"
    with open(os.path.join(workdir, name), "w") as fh:
        json.dump(result, fh, indent=2)
    return result


def main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
        if FLAGS.iwae_k < 1:
            raise EvaluationError(f"--iwae_k must be >= 1, got {FLAGS.iwae_k}")
        if FLAGS.iwae_images is not None and FLAGS.iwae_images < 1:
            raise EvaluationError(f"--iwae_images must be >= 1 (or left out for the whole test split), got {FLAGS.iwae_images}")
        if FLAGS.sampler_components is not None and FLAGS.sampler_components < 1:
            raise EvaluationError(f"--sampler_components must be >= 1, got {FLAGS.sampler_components}")
        result = evaluate_workdir(FLAGS.workdir, FLAGS.cache_dir, FLAGS.num_samples, FLAGS.seed, FLAGS.sampler,
                                  FLAGS.weights, FLAGS.iwae_k, FLAGS.iwae_images, FLAGS.sampler_components,
                                  FLAGS.sampler_seed)
    except EvaluationError as e:
        cli.fail(e)
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
