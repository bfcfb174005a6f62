"""Look inside a trained model, and at the theory of the GAN game:

  python -m train.explore --workdir=W --interpolate [--pairs=4] [--steps=10] [--out=PATH]
  python -m train.explore --workdir=W --arithmetic [--triples="a,b,c;..."] [--out=PATH]
  python -m train.explore --workdir=W --traverse [--steps=10] [--out=PATH]
  python -m train.explore --theory [--workdir=W] [--out=PATH]
  (models without an encoder: --arithmetic [--draws=2000] [--confidence=0.9] [--cache_dir=DIR])

--interpolate  W/explore/interpolate.png: for each of --pairs pairs of test
               images (x_a, x_b) two rows, x_a | decode(z_t) for --steps values
               of t from 0 to 1 | x_b, with z_t the linear interpolation
               (1 - t) z_a + t z_b (first row) and the spherical one
               slerp(z_a, z_b; t) (second row) of the codes z = encode(x).
               The pairs are drawn from the test split with --seed, each of
               two images of different classes. BiGAN decodes with its
               generator G(z); the CVAE decodes each row with x_a's label.
               A model without an encoder (gan, dcgan, cgan) interpolates
               between two prior draws z ~ N(0, I) instead (rows of --steps
               images, no real ends; cgan: one random label per pair).
--arithmetic   W/explore/arithmetic.png: rows a | b | c | decode(z_a - z_b + z_c),
               the latent "vector addition" of examples of the test split.
               Default triples, one per class k: a and b are the test images
               of class k with the most and the least ink (mean pixel), c is
               the median-ink test image of class k + 1, so a - b is a
               "bold minus thin" direction and the result should be a bolder c.
               Also W/explore/arithmetic_class_means.png: rows c | decode(z_c -
               m_{y_c} + m_k) for k = 0, 1, ..., with m_k the mean code of the
               test images of class k: c's style written as every class (c is
               the median-ink test image of each class; conditional models
               decode with label k).
               A model without an encoder (gan, dcgan, cgan) draws --draws
               latents z ~ N(0, I) (cgan: with uniform labels), generates,
               classifies the images with train.evaluate's classifier and
               keeps those of class probability >= --confidence (cgan: and of
               their own label); the same figures then use the kept images as
               the split, their predicted classes as labels and their z as
               codes (--triples index the kept images). One JSON line says how
               many were kept, per class.
--traverse     W/explore/traverse.png: one row per latent dimension j, the
               decodings of the base code with z_j swept over --steps values
               from -3 to 3 (the others kept). The base code is encode(x) of
               one test image x, drawn with --seed, for models with an encoder
               (the posterior mean for the VAEs; the CVAE decodes with x's
               label); z = 0, the mode of the N(0, I) prior, for models without
               one (cgan: one random label). One JSON line under "traverse":
               the base, the swept values and per dimension the mean absolute
               pixel change between the row's two ends (0 for a dimension the
               decoder ignores).
--theory       explore/theory.png (W/explore/theory.png with --workdir) and one
               JSON line: a small MLP discriminator D trained on samples of two
               known 1-D densities against D*(x) = p_data / (p_data + p_g), and
               the value V(G, D) against -2 log 2 + 2 JSD(p_data || p_g); see
               `theory`. Also theory_gan.png beside it: a 1-D generator trained
               against D on the same p_data, p_g at checkpoints and
               JSD(p_data || p_g) over training (Proposition 2; `gan_theory`),
               and theory_ml_vs_gan.png: one Gaussian fitted to two bimodal
               p_data by maximum likelihood (KL), by the JSD's minimum and by
               GANs (`one_gaussian`). Their figures are in the JSON line under
               "gan" and "one_gaussian".
"""

import json
import math
import os
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from scipy import special  # noqa: E402

import zoo  # noqa: E402  (registers the model classes for load_model)
from zoo import losses as zoo_losses  # noqa: E402
from train import cli  # noqa: E402
from train import callbacks, evaluate, plots  # noqa: E402
from train import workdir as workdirs  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("interpolate", "arithmetic", "traverse", "theory")


def define_flags():
    """The command's flags. Defined only when it runs as a program (see the end of
    the file), so that tests and scripts can import these functions next to
    train.run or train.evaluate, whose --workdir and --seed would otherwise clash."""
    flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras (not needed for --theory)")
    flags.DEFINE_bool("interpolate", False, "write interpolations between the codes of test image pairs")
    flags.DEFINE_bool("arithmetic", False, "write latent arithmetic decode(z_a - z_b + z_c) of test images")
    flags.DEFINE_bool("traverse", False, "write one row per latent dimension, swept over [-3, 3] around a base code")
    flags.DEFINE_bool("theory", False, "compare a trained discriminator with the optimal D* on two 1-D densities")
    flags.DEFINE_integer("pairs", 4, "--interpolate: pairs of test images (two rows each)")
    flags.DEFINE_integer("steps", 10, "--interpolate: values of t from 0 to 1 in each row; --traverse: values of "
                         "z_j from -3 to 3")
    flags.DEFINE_string("triples", None, "--arithmetic: test-split indices 'a,b,c;a,b,c;...' (default: see the module doc)")
    flags.DEFINE_integer("theory_steps", 5000, "--theory: discriminator training steps")
    flags.DEFINE_integer("gan_steps", 2000, "--theory: generator steps of the 1-D GAN")
    flags.DEFINE_integer("fit_steps", 1500, "--theory: generator steps of the one-Gaussian GANs")
    flags.DEFINE_integer("draws", 2000, "--arithmetic without an encoder: generated images to classify")
    flags.DEFINE_float("confidence", 0.9, "--arithmetic without an encoder: least class probability of a kept image")
    flags.DEFINE_string("cache_dir", evaluate.CACHE_DIR, "--arithmetic without an encoder: where train.evaluate's "
                        "classifier is cached")
    flags.DEFINE_integer("seed", 0, "seed of the chosen pairs, prior draws and the --theory run")
    flags.DEFINE_string("out", None, "where to write the PNG (default: W/explore/<mode>.png); one mode at a time")


class ExploreError(Exception):
    """A one-line, actionable error of the command line."""


# -- interpolation maths -----------------------------------------------------


def lerp(a, b, t):
    """(1 - t) a + t b for each t: vectors a, b [D], t [T] -> [T, D]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    return (1.0 - t) * a + t * b


def slerp(a, b, t, eps=1e-6):
    """sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b, with
    cos(theta) = a.b / (|a| |b|): vectors a, b [D], t [T] -> [T, D].

    The great-circle path: for |a| = |b| every point keeps that norm, which a
    straight line through the low-density middle of N(0, I) does not. Where
    sin(theta) < eps (a and b parallel or opposite) the formula is 0/0 and
    this falls back to lerp."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0.0:
        return lerp(a, b, t)
    theta = math.acos(float(np.clip(a @ b / norms, -1.0, 1.0)))
    if math.sin(theta) < eps:
        return lerp(a, b, t)
    t = np.asarray(t, np.float64)[:, None]
    return (np.sin((1.0 - t) * theta) * a + np.sin(t * theta) * b) / math.sin(theta)


# -- loading a run ----------------------------------------------------------


def encoder_models():
    """Names of the zoo models that have an encoder (and so can encode test images)."""
    return zoo.names("encoder")


def decoder(model):
    """z, labels -> images: the model's decode, or generate(z) = G(z) where it
    has none (the GANs)."""
    fn = model.decode if model.can("decoder") else model.generate
    return lambda z, labels: np.asarray(fn(np.asarray(z, np.float32), labels=labels))


def grid_scale(image_height):
    """How many times the PNG enlarges each pixel: 28x28 digits twice, 8x8 ones 7 times."""
    return max(1, 56 // image_height)


def write_grid(path, images, columns):
    """images [N, H, W, C] in [0, 1] as a PNG grid of `columns` columns; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    callbacks.save_png(path, callbacks.image_grid(images, columns), grid_scale(images.shape[1]))
    return path


# -- --interpolate -----------------------------------------------------------


def pick_pairs(labels, n, seed=0):
    """n pairs (a, b) of test-split indices: a drawn without replacement, b of
    another class than a where there is one, both with RandomState(seed)."""
    rng = np.random.RandomState(seed)
    pairs = []
    for a in rng.choice(len(labels), min(n, len(labels)), replace=False):
        others = np.flatnonzero(labels != labels[a])
        others = others if len(others) else np.delete(np.arange(len(labels)), a)
        pairs.append((int(a), int(rng.choice(others))))
    return pairs


def norms_note(codes):
    """'mean |z|: ends E, lerp midpoint L, slerp midpoint S' over pairs of codes [(z_a, z_b), ...]:
    why slerp (a straight line between two draws of N(0, I) in J dimensions, both
    of norm about sqrt(J), passes the midpoint at about sqrt(J / 2))."""
    ends = np.mean([np.linalg.norm(z) for pair in codes for z in pair])
    mid = [np.mean([np.linalg.norm(f(a, b, [0.5])) for a, b in codes]) for f in (lerp, slerp)]
    return f"mean |z|: ends {ends:.2f}, lerp midpoint {mid[0]:.2f}, slerp midpoint {mid[1]:.2f}"


def interpolation_rows(model, dataset, pairs=4, steps=10, seed=0):
    """(images [rows * columns, H, W, C], columns, a note of what the rows show)
    of the interpolation grid (see the module doc): 2 rows per pair, steps + 2
    columns with an encoder, `steps` columns between prior draws without one."""
    t = np.linspace(0.0, 1.0, steps)
    dec = decoder(model)
    rows, codes = [], []
    if model.can("encoder"):
        x, y = dataset.test_images, dataset.test_labels
        chosen = pick_pairs(y, pairs, seed)
        for a, b in chosen:
            z_a, z_b = model.encode_all(x[[a, b]], y[[a, b]])
            codes.append((z_a, z_b))
            labels = np.full(steps, y[a], np.int32)  # the CVAE draws x_a's class all along
            for path in (lerp, slerp):
                rows += [x[a : a + 1], dec(path(z_a, z_b, t), labels), x[b : b + 1]]
        shown = ", ".join(f"{a}-{b} ({y[a]}-{y[b]})" for a, b in chosen)
        return np.concatenate(rows), steps + 2, f"test pairs (labels) {shown}; {norms_note(codes)}"
    rng = np.random.RandomState(seed)
    for _ in range(pairs):
        z_a, z_b = rng.randn(2, model.latent_dim)
        codes.append((z_a, z_b))
        labels = np.full(steps, rng.randint(max(model.num_classes, 1)), np.int32)
        rows += [dec(path(z_a, z_b, t), labels) for path in (lerp, slerp)]
    return np.concatenate(rows), steps, f"{pairs} pairs of prior draws; {norms_note(codes)}"


# -- --arithmetic ------------------------------------------------------------


def _by_ink(images, labels, k):
    """Indices of the test images of class k, from least to most ink (mean pixel)."""
    idx = np.flatnonzero(labels == k)
    return idx[np.argsort(images[idx].reshape(len(idx), -1).mean(1), kind="stable")]


def default_triples(images, labels):
    """One (a, b, c) per class k: a, b the most- and least-ink images of class k,
    c the median-ink image of the next class present."""
    classes = np.unique(labels)
    triples = []
    for i, k in enumerate(classes):
        same, nxt = _by_ink(images, labels, k), _by_ink(images, labels, classes[(i + 1) % len(classes)])
        triples.append((int(same[-1]), int(same[0]), int(nxt[len(nxt) // 2])))
    return triples


def parse_triples(text, n, split="the test split"):
    """'a,b,c;a,b,c' -> [(a, b, c), ...] of indices into `split`, n images."""
    triples = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            triple = tuple(int(v) for v in part.split(","))
        except ValueError:
            triple = ()
        if len(triple) != 3:
            raise ExploreError(f"--triples: {part!r} is not three indices a,b,c (e.g. --triples='0,1,2;3,4,5')")
        bad = [i for i in triple if not 0 <= i < n]
        if bad:
            raise ExploreError(f"--triples: index {bad[0]} is outside {split} (0 .. {n - 1})")
        triples.append(triple)
    if not triples:
        raise ExploreError("--triples is empty; give 'a,b,c;...' or leave it out for the default")
    return triples


class Pool(NamedTuple):
    """The images the arithmetic picks from, with their classes and latent codes."""

    images: np.ndarray  # [N, H, W, C]
    labels: np.ndarray  # [N] the class of each image (what conditional models decode with)
    codes: np.ndarray  # [N, J] z of each image
    name: str  # what the images are, for messages: "the test split", "the kept generated images"


def encoded_pool(model, dataset):
    """The test split with its labels and codes encode(x): for models with an encoder."""
    x, y = dataset.test_images, dataset.test_labels
    return Pool(x, y, model.encode_all(x, y), "the test split")


def confident_classes(probabilities, confidence, given=None):
    """(predicted class [N], kept [N] bool) of a classifier's class probabilities
    [N, K]: the argmax, kept where its probability is at least `confidence` and,
    for samples generated with a label (`given`), where it is that label."""
    predicted = probabilities.argmax(1)
    kept = probabilities.max(1) >= confidence
    if given is not None:
        kept &= predicted == given
    return predicted, kept


def generated_pool(model, dataset, clf, draws=2000, confidence=0.9, seed=0):
    """(Pool, figures) for a model without an encoder: `draws` latents z ~ N(0, I)
    (conditional models: with labels drawn uniformly) and their images G(z),
    classified by the evaluation classifier `clf` (train.evaluate.classifier);
    the pool keeps the confidently classified ones (confident_classes), with
    their predicted classes and their z as codes. figures: {draws, confidence,
    kept, class_counts (kept per class)}."""
    rng = np.random.RandomState(seed)
    z = rng.randn(draws, model.latent_dim).astype(np.float32)
    given = rng.randint(dataset.num_classes, size=draws).astype(np.int32) if model.conditional else None
    images = evaluate.generated(model, z, given)
    logits = np.asarray(clf.predict(images, batch_size=250, verbose=0)[1], np.float64)
    predicted, kept = confident_classes(special.softmax(logits, axis=1), confidence, given)
    if not kept.any():
        raise ExploreError(f"none of the {draws} generated images was classified with probability >= {confidence}"
                           f"{' as its label' if given is not None else ''}: train longer or lower --confidence")
    figures = {"draws": draws, "confidence": confidence, "kept": int(kept.sum()),
               "class_counts": np.bincount(predicted[kept], minlength=dataset.num_classes).tolist()}
    pool = Pool(images[kept], predicted[kept].astype(np.int32), z[kept].astype(np.float64), "the kept generated images")
    return pool, figures


def class_means(codes, labels):
    """(classes present, in order, [K]; their mean codes m_k [K, J])."""
    classes = np.unique(labels)
    return classes, np.stack([codes[labels == k].mean(0) for k in classes])


def arithmetic_rows(model, pool, triples):
    """Images [4 * len(triples), H, W, C]: per triple a, b, c, decode(z_a - z_b + z_c)
    (conditional models decode with c's label)."""
    x, y, codes = pool.images, pool.labels, pool.codes
    dec, rows = decoder(model), []
    for a, b, c in triples:
        rows += [x[[a, b, c]], dec((codes[a] - codes[b] + codes[c])[None], y[[c]])]
    return np.concatenate(rows)


def class_mean_rows(model, pool):
    """(images, columns): per class, c (its median-ink image of the pool) then
    decode(z_c - m_{y_c} + m_k) for every class k, m_k the mean code of class k."""
    x, y, codes = pool.images, pool.labels, pool.codes
    classes, means = class_means(codes, y)
    dec, rows = decoder(model), []
    for k in classes:
        by_ink = _by_ink(x, y, k)
        c = by_ink[len(by_ink) // 2]
        z = codes[c] - means[np.searchsorted(classes, y[c])] + means
        rows += [x[c : c + 1], dec(z, classes.astype(np.int32))]
    return np.concatenate(rows), len(classes) + 1


# -- --traverse --------------------------------------------------------------

TRAVERSE_LIMIT = 3.0  # sweep z_j over [-3, 3]: 3 standard deviations of the N(0, I) prior


def traversal_rows(model, dataset, steps=10, seed=0, limit=TRAVERSE_LIMIT):
    """(images [J * steps, H, W, C], figures) of the traversal grid (see the
    module doc): row j decodes the base code with z_j set to each of `steps`
    values from -limit to limit. figures: {base (what the base code is),
    values, pixel_change (per dimension, the mean |image at +limit - image at
    -limit|)}."""
    values = np.linspace(-limit, limit, steps)
    rng = np.random.RandomState(seed)
    if model.can("encoder"):
        i = int(rng.randint(len(dataset.test_images)))
        label = dataset.test_labels[i]
        base = model.encode_all(dataset.test_images[i : i + 1], dataset.test_labels[i : i + 1])[0]
        what = f"encode(x) of test image {i} (label {label})"
    else:
        label = rng.randint(max(model.num_classes, 1))
        base = np.zeros(model.latent_dim)
        what = "z = 0, the prior's mode" + (f" (label {label})" if model.conditional else "")
    dec, labels = decoder(model), np.full(steps, label, np.int32)
    rows = []
    for j in range(model.latent_dim):
        z = np.tile(base, (steps, 1))
        z[:, j] = values
        rows.append(dec(z, labels))
    change = [float(np.abs(row[-1] - row[0]).mean()) for row in rows]
    figures = {"base": what, "values": [_round(v, 3) for v in values], "pixel_change": [_round(c, 4) for c in change]}
    return np.concatenate(rows), figures


# -- --theory: the optimal discriminator -----------------------------------

# Two known 1-D densities as (weight, mean, std) mixtures. p_g is wider and
# centred between the modes of p_data, so D* is near 1 at the modes and near 0
# in the middle and the tails.
P_DATA = ((0.5, -2.0, 0.5), (0.5, 1.5, 0.75))
P_G = ((1.0, 0.0, 1.5),)
GRID = (-8.0, 8.0, 8001)  # the integration grid (p_g's tails beyond are < 1e-7 of its mass)
PLOT_RANGE = (-6.0, 6.0)
MASS = 1e-2  # errors of D are measured where p_data + p_g > MASS


def mixture_pdf(x, components):
    """sum_k w_k N(x; mu_k, sigma_k^2)."""
    x = np.asarray(x, np.float64)
    return sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for w, m, s in components)


def mixture_sample(rng, n, components):
    """n draws of the mixture: a component k with probability w_k, then mu_k + sigma_k eps."""
    w, m, s = (np.array(v, np.float64) for v in zip(*components))
    k = rng.choice(len(components), n, p=w / w.sum())
    return m[k] + s[k] * rng.randn(n)


def _xlogy(a, b):
    """a log b, and 0 where a = 0 (the limit the integrals need)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.where(a > 0, a * np.log(np.where(a > 0, b, 1.0)), 0.0)


def optimal_discriminator(p_data, p_g):
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)) (1/2 where both vanish)."""
    total = p_data + p_g
    return np.where(total > 0, p_data / np.where(total > 0, total, 1.0), 0.5)


def value(x, p_data, p_g, d):
    """V(G, D) = int p_data log D + p_g log(1 - D) dx by the trapezoidal rule;
    D is clipped to [1e-7, 1 - 1e-7] so a saturated sigmoid gives no log 0."""
    d = np.clip(d, 1e-7, 1.0 - 1e-7)
    return float(np.trapezoid(_xlogy(p_data, d) + _xlogy(p_g, 1.0 - d), x))


def value_optimal(x, p_data, p_g):
    """V(G, D*) = int p_data log(p_data / (p_data + p_g)) + p_g log(p_g / (p_data + p_g)) dx,
    unclipped (the identity V(G, D*) = -2 log 2 + 2 JSD is exact pointwise)."""
    total = p_data + p_g
    return float(np.trapezoid(_xlogy(p_data, p_data / total) + _xlogy(p_g, p_g / total), x))


def jsd(x, p, q):
    """JSD(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, KL(p || m) = int p log(p / m) dx.
    Densities on the grid x; q may be [..., len(x)], for one JSD per row."""
    m = (p + q) / 2.0
    safe = np.where(m > 0, m, 1.0)
    out = 0.5 * np.trapezoid(_xlogy(p, p / safe), x) + 0.5 * np.trapezoid(_xlogy(q, q / safe), x)
    return float(out) if np.ndim(out) == 0 else out


def train_discriminator(steps=5000, batch_size=512, learning_rate=1e-2, seed=0):
    """A Dense(64) -> Dense(64) -> sigmoid MLP trained with binary cross-entropy,
    labels 1 for p_data and 0 for p_g, for `steps` Adam steps (cosine-decayed
    learning rate) on batches of batch_size fresh draws from each density."""
    keras.utils.set_random_seed(seed)
    rng = np.random.RandomState(seed)
    n = steps * batch_size  # every draw is seen once: fresh samples at every step
    x = np.concatenate([mixture_sample(rng, n, P_DATA), mixture_sample(rng, n, P_G)]).astype(np.float32)[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    d = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Rescaling(1.0 / 3.0),  # x is mostly in [-6, 6]: unit scale trains faster
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    d.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
              loss="binary_crossentropy")
    d.fit(x, y, batch_size=2 * batch_size, epochs=1, shuffle=True, verbose=0)
    return d


def theory(steps=5000, batch_size=512, seed=0):
    """Trains D (train_discriminator) and compares it with D* on the grid GRID.

    Returns {"figures": {d_star_max_error, d_star_mean_error (|D - D*| where
    p_data + p_g > MASS), v_trained = V(G, D), v_optimal = V(G, D*), v_theory =
    -2 log 2 + 2 JSD, jsd}, "curves": {x, p_data, p_g, d, d_star}}."""
    x = np.linspace(*GRID)
    p, q = mixture_pdf(x, P_DATA), mixture_pdf(x, P_G)
    d = train_discriminator(steps, batch_size, seed=seed).predict(x[:, None].astype(np.float32), batch_size=8192, verbose=0)
    d = d[:, 0].astype(np.float64)
    d_star = optimal_discriminator(p, q)
    error = np.abs(d - d_star)[p + q > MASS]
    divergence = jsd(x, p, q)
    figures = {
        "d_star_max_error": float(error.max()),
        "d_star_mean_error": float(error.mean()),
        "v_trained": value(x, p, q, d),
        "v_optimal": value_optimal(x, p, q),
        "v_theory": -2.0 * math.log(2.0) + 2.0 * divergence,
        "jsd": divergence,
    }
    return {"figures": figures, "curves": {"x": x, "p_data": p, "p_g": q, "d": d, "d_star": d_star}}


def _font(size):
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def plot_theory(path, result, size=(900, 520)):
    """A PIL line plot of p_data, p_g, D* and D over PLOT_RANGE (y from 0 to 1), with a legend."""
    c, f = result["curves"], result["figures"]
    width, height = size
    left, right, top, bottom = 60, width - 230, 60, height - 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(13)
    (x0, x1), keep = PLOT_RANGE, (c["x"] >= PLOT_RANGE[0]) & (c["x"] <= PLOT_RANGE[1])

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - y * (bottom - top)

    for y in np.linspace(0, 1, 5):  # horizontal grid and y ticks
        draw.line([px(x0, y), px(x1, y)], fill=(225, 225, 225))
        draw.text((left - 8, px(x0, y)[1]), f"{y:.2f}", fill="black", font=small, anchor="rm")
    for x in range(int(x0), int(x1) + 1, 2):
        draw.line([px(x, 0), px(x, 1)], fill=(225, 225, 225))
        draw.text((px(x, 0)[0], bottom + 6), str(x), fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 10), "The optimal discriminator D*(x) = p_data(x) / (p_data(x) + p_g(x))", fill="black", font=font)
    draw.text((left, 32), f"V(G, D) = {f['v_trained']:.4f}   V(G, D*) = {f['v_optimal']:.4f}   "
              f"-2 log 2 + 2 JSD = {f['v_theory']:.4f}   mean |D - D*| = {f['d_star_mean_error']:.4f}",
              fill="black", font=small)
    draw.text(((left + right) / 2, height - 22), "x", fill="black", font=small, anchor="mt")
    curves = [
        ("p_data (density)", c["p_data"], (31, 119, 180), False),
        ("p_g (density)", c["p_g"], (255, 127, 14), False),
        ("D* (optimal)", c["d_star"], (0, 0, 0), False),
        ("D (trained MLP)", c["d"], (214, 39, 40), True),
    ]
    for i, (label, y, colour, dashed) in enumerate(curves):
        points = [px(a, b) for a, b in zip(c["x"][keep][::8], np.clip(y[keep][::8], 0, 1))]
        if dashed:  # every other short segment, so D and D* both show where they coincide
            for j in range(0, len(points) - 4, 8):
                draw.line(points[j : j + 5], fill=colour, width=3)
        else:
            draw.line(points, fill=colour, width=2)
        ly = top + 10 + 24 * i
        if dashed:
            draw.line([(right + 20, ly), (right + 30, ly)], fill=colour, width=3)
            draw.line([(right + 38, ly), (right + 48, ly)], fill=colour, width=3)
        else:
            draw.line([(right + 20, ly), (right + 48, ly)], fill=colour, width=2)
        draw.text((right + 56, ly), label, fill="black", font=small, anchor="lm")
    notes = ["p_data = 1/2 N(-2, 0.5^2)", "   + 1/2 N(1.5, 0.75^2)", "p_g = N(0, 1.5^2)", f"JSD = {f['jsd']:.4f}"]
    for i, note in enumerate(notes):
        draw.text((right + 20, top + 130 + 20 * i), note, fill="black", font=small)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with workdirs.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


# -- --theory: a 1-D GAN (Proposition 2) ----------------------------------------


class PairedDense(keras.layers.Layer):
    """`pairs` independent Dense layers applied at once: [P, B, i] -> [P, B, o].

    Trains P small 1-D GANs (each its own G and D) in the ops of one: at these
    sizes a step's cost is the number of ops, not their width. Kernels start
    Glorot-uniform (drawn with `seed`) and biases at 0, unless `kernel` and
    `bias` ([P] each, for 1 -> 1 layers) give their start values."""

    def __init__(self, pairs, units, activation=None, seed=0, kernel=None, bias=None, **kwargs):
        super().__init__(**kwargs)
        self.pairs, self.units, self.seed = pairs, units, seed
        self.activation = keras.activations.get(activation)
        self.start = kernel, bias

    def build(self, input_shape):
        fan_in = input_shape[-1]
        kernel, bias = self.start
        if kernel is None:
            limit = math.sqrt(6.0 / (fan_in + self.units))
            kernel = np.random.RandomState(self.seed).uniform(-limit, limit, (self.pairs, fan_in, self.units))
        bias = np.zeros((self.pairs, 1, self.units)) if bias is None else bias
        shape = (self.pairs, fan_in, self.units)
        self.kernel = self.add_weight(shape=shape, initializer=keras.initializers.Constant(
            np.reshape(kernel, shape)), name="kernel")
        self.bias = self.add_weight(shape=(self.pairs, 1, self.units), initializer=keras.initializers.Constant(
            np.reshape(bias, (self.pairs, 1, self.units))), name="bias")

    def call(self, x):
        return self.activation(keras.ops.matmul(x, self.kernel) + self.bias)


def paired_mlp(pairs, width, seed=0, scale=1.0):
    """P independent 1 -> width -> width -> 1 ReLU MLPs (inputs multiplied by `scale`)."""
    return keras.Sequential([
        keras.layers.Rescaling(scale),
        PairedDense(pairs, width, "relu", seed=seed),
        PairedDense(pairs, width, "relu", seed=seed + 1),
        PairedDense(pairs, 1, seed=seed + 2),
    ])


def paired_gaussians(starts):
    """G_p(z) = mu_p + sigma_p z for each start (mu_p, sigma_p): the one-Gaussian
    generators, N(mu_p, sigma_p^2) for z ~ N(0, 1) (sigma_p is |kernel|)."""
    mu, sigma = (np.array(v, np.float64) for v in zip(*starts))
    return PairedDense(len(starts), 1, kernel=sigma, bias=mu)


def train_gan(generator, densities, loss_names, steps, batch_size=256, learning_rates=(1e-3, 1e-3), d_steps=1,
              seed=0, every=100, checkpoint=None, d_width=64, warmup=0):
    """Algorithm 1 of Goodfellow et al. for P 1-D GANs at once: per step, d_steps
    discriminator steps, each on a fresh batch of each p_data (densities[p])
    and of G_p(z), then one generator step on fresh z. Each D is paired_mlp's
    Dense(d_width)-Dense(d_width) on x / 3, losses from zoo.losses
    (loss_names[p], e.g. "minimax" or "non_saturating"), Adam(beta_1 = 0.5) with learning rates
    (D's, G's) cosine-decayed over `steps`; with `warmup` > 0, G's rises
    linearly from 0 over the first `warmup` steps, so that D learns against
    the starting G before G moves. checkpoint(step) is called at step 0 and
    after every `every` steps."""
    pairs = len(densities)
    keras.utils.set_random_seed(seed)
    rng = np.random.RandomState(seed)
    discriminator = paired_mlp(pairs, d_width, seed=seed, scale=1.0 / 3.0)
    d_lr, g_lr = learning_rates
    d_opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(d_lr, steps), beta_1=0.5)
    g_opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, warmup_target=g_lr, warmup_steps=warmup) if warmup else
        keras.optimizers.schedules.CosineDecay(g_lr, steps), beta_1=0.5)
    if warmup >= steps:
        raise ValueError(f"warmup ({warmup}) must be fewer than the steps ({steps})")
    for net in (generator, discriminator):
        net(np.zeros((pairs, 1, 1), np.float32))  # builds the weights, then the optimizers' slots:
    d_opt.build(discriminator.trainable_weights)  # run_steps is traced once, with no variable to create
    g_opt.build(generator.trainable_weights)

    groups = {}  # loss name -> the pairs that train with it
    for p, name in enumerate(loss_names):
        groups.setdefault(name, []).append(p)

    def per_pair(side, *logits):  # each pair's mean loss, summed: pair p's weights see only their own
        total = 0.0
        for name, chosen in groups.items():
            fn = zoo_losses.get(name)[side]
            total += tf.reduce_sum(fn(*(tf.gather(l, chosen) for l in logits))) / batch_size
        return total

    @tf.function
    def run_steps(real, z):  # real [n, d_steps, P, B, 1], z [n, d_steps + 1, P, B, 1]
        for s in tf.range(tf.shape(real)[0]):
            for k in range(d_steps):
                with tf.GradientTape() as tape:
                    loss = per_pair(0, discriminator(real[s, k]), discriminator(generator(z[s, k])))
                weights = discriminator.trainable_weights
                d_opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
            with tf.GradientTape() as tape:
                loss = per_pair(1, discriminator(generator(z[s, d_steps])))
            weights = generator.trainable_weights
            g_opt.apply_gradients(zip(tape.gradient(loss, weights), weights))

    if checkpoint:
        checkpoint(0)
    for done in range(0, steps, every):
        n = min(every, steps - done)
        real = np.stack([mixture_sample(rng, n * d_steps * batch_size, c).reshape(n, d_steps, batch_size, 1)
                         for c in densities], axis=2)
        run_steps(real.astype(np.float32), rng.randn(n, d_steps + 1, pairs, batch_size, 1).astype(np.float32))
        if checkpoint:
            checkpoint(done + n)
    return generator


def mixture_cdf(x, components):
    """sum_k w_k Phi((x - mu_k) / sigma_k)."""
    return sum(w * special.ndtr((np.asarray(x, np.float64) - m) / s) for w, m, s in components)


BINS = np.linspace(GRID[0], GRID[1], 401)  # p_g is estimated on bins of width 0.04
QUANTILES = 100_000


def binned(components, edges=BINS):
    """The mixture's mean density on each bin, (CDF(right) - CDF(left)) / width."""
    return np.diff(mixture_cdf(edges, components)) / np.diff(edges)


def pushforward_density(g, edges=BINS, n=QUANTILES):
    """p_g on bins: a histogram of g(z_i) for the n equal-mass quantiles
    z_i = Phi^-1((i + 1/2) / n) of N(0, 1), as a density (count / (n width)).
    Deterministic: no sampling noise, only the bins' and the quantiles' resolution."""
    z = special.ndtri((np.arange(n) + 0.5) / n)
    counts, _ = np.histogram(np.asarray(g(z), np.float64).ravel(), edges)
    return counts / (n * np.diff(edges))


def mixture_quantile(components, u):
    """The inverse CDF of a mixture at u (by interpolating its CDF on a fine grid):
    the generator that is exactly p_data, for the estimator's floor."""
    x = np.linspace(GRID[0], GRID[1], 160_001)
    return np.interp(u, mixture_cdf(x, components), x)


def gan_theory(steps=2000, batch_size=256, seed=0, every=50, shown=(0, 200, 400, 1000), learning_rates=(1e-3, 1e-3),
               warmup=0.15, d_steps=1):
    """Proposition 2 made visible: a 1-D G (Dense(32)-Dense(32) ReLU MLP, z ~
    N(0, 1)) trained against D (train_gan: non-saturating loss, learning rates
    1e-3, G's warmed up over the first `warmup` of the steps) on p_data = P_DATA. Every `every` steps p_g is estimated on BINS
    (pushforward_density) and JSD(p_data || p_g) computed on them (jsd_floor:
    the same estimator for a G that is exactly p_data's quantile function).

    Returns {"figures": {steps, jsd_start, jsd_final, jsd_min, jsd_floor, jsd_at
    ({step: JSD} at the `shown` steps and the last)}, "curves": {x (bin
    centres), p_data, p_g ({step: density} at those steps), jsd_steps, jsd}}."""
    centres = (BINS[1:] + BINS[:-1]) / 2.0
    p = binned(P_DATA)
    generator = paired_mlp(1, 32, seed=seed + 10)
    keep = sorted({s for s in shown if s < steps} | {steps})
    history, densities = [], {}

    def checkpoint(step):
        q = pushforward_density(lambda z: generator(z[None, :, None].astype(np.float32)))
        history.append((step, jsd(centres, p, q)))
        if step in keep:
            densities[step] = q

    train_gan(generator, [P_DATA], ["non_saturating"], steps, batch_size, learning_rates, d_steps, seed=seed,
              every=every, checkpoint=checkpoint, warmup=int(warmup * steps))
    floor = jsd(centres, p, pushforward_density(lambda z: mixture_quantile(P_DATA, special.ndtr(z))))
    jsd_steps, jsd_values = (np.array(v) for v in zip(*history))
    figures = {
        "steps": steps,
        "jsd_start": _round(jsd_values[0]),
        "jsd_final": _round(jsd_values[-1]),
        "jsd_min": _round(jsd_values.min()),
        "jsd_floor": float(f"{floor:.3g}"),
        "jsd_at": {str(s): _round(j) for s, j in history if s in densities},
    }
    curves = {"x": centres, "p_data": p, "p_g": densities, "jsd_steps": jsd_steps, "jsd": jsd_values}
    return {"figures": figures, "curves": curves}


def _round(v, digits=4):
    return round(float(v), digits)


def plot_gan(path, result):
    """(a) p_data and p_g at the checkpoints kept, (b) JSD(p_data || p_g) over the steps."""
    c, f = result["curves"], result["figures"]
    fig, (a, b) = plots.pyplot().subplots(1, 2, figsize=(11, 4), dpi=100)
    keep = (c["x"] >= PLOT_RANGE[0]) & (c["x"] <= PLOT_RANGE[1])
    a.plot(c["x"][keep], c["p_data"][keep], color="black", linewidth=2.5, label="p_data")
    colours = plots.pyplot().cm.viridis(np.linspace(0.0, 0.9, len(c["p_g"])))
    for colour, (step, q) in zip(colours, sorted(c["p_g"].items())):
        a.plot(c["x"][keep], q[keep], color=colour, linewidth=1.2,
               label=f"p_g at step {step} (JSD {f['jsd_at'][str(step)]:.3f})")
    a.set(ylim=(0.0, 1.5 * c["p_data"].max()), xlabel="x", ylabel="density", title="p_g approaches p_data")
    a.legend(fontsize="small")
    b.plot(c["jsd_steps"], c["jsd"], marker=".")
    b.axhline(max(f["jsd_floor"], 1e-6), color="gray", linestyle="--",
              label=f"estimator floor (p_g = p_data): {f['jsd_floor']:.1e}")
    b.set(yscale="log", xlabel="generator step", ylabel="JSD(p_data || p_g), nats",
          title=f"JSD falls: {f['jsd_start']:.3f} -> {f['jsd_final']:.4f} (log 2 = 0.693 at most)")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize="small")
    return plots.save(fig, path)


# -- --theory: maximum likelihood (KL) vs the GAN (JSD) with one Gaussian -------

# The notes' toy (P_DATA: modes 3.5 apart) and the same two components 6 apart.
# A single Gaussian cannot fit either; which one it settles on depends on the
# divergence minimised and, for the JSD, on how far apart the modes are.
TOYS = (("notes_toy", P_DATA), ("wide_toy", ((0.5, -3.0, 0.5), (0.5, 3.0, 0.75))))
# Wide enough for N(5, 5^2). The trapezoidal rule converges geometrically on these
# smooth integrands: 501 points give the same JSDs as 5001 to 1e-8.
WIDE_GRID = (-25.0, 25.0, 1001)
MUS = np.linspace(-5.0, 5.0, 201)  # the grid of the JSD's search over (mu, sigma)
SIGMAS = np.exp(np.linspace(math.log(0.2), math.log(5.0), 101))


def gaussian_logpdf(x, mu, sigma):
    """log N(x; mu, sigma^2), exact where the density itself underflows."""
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2.0 * math.pi)


def moments(components):
    """(mean, standard deviation) of a mixture: the maximum-likelihood Gaussian
    fit, argmin over (mu, sigma) of KL(p || N(mu, sigma^2)) = -H(p) - E_p log N,
    is N(E_p x, Var_p x)."""
    w, m, s = (np.array(v, np.float64) for v in zip(*components))
    w = w / w.sum()
    mean = float(w @ m)
    return mean, math.sqrt(float(w @ (s**2 + m**2)) - mean**2)


def kl_to_gaussian(x, p, mu, sigma):
    """KL(p || N(mu, sigma^2)) = int p (log p - log N(x; mu, sigma^2)) dx on the grid x."""
    return float(np.trapezoid(_xlogy(p, p) - p * gaussian_logpdf(x, mu, sigma), x))


def jsd_landscape(x, p, mus=MUS, sigmas=SIGMAS):
    """JSD(p || N(mu, sigma^2)) for every mu in mus (rows) and sigma in sigmas (columns)."""
    return np.stack([jsd(x, p, np.exp(gaussian_logpdf(x, mu, sigmas[:, None]))) for mu in mus])


def local_minima(values):
    """(i, j) of the interior cells lower than their 8 neighbours, lowest first."""
    inner = values[1:-1, 1:-1]
    lower = np.ones_like(inner, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                lower &= inner < values[1 + di : values.shape[0] - 1 + di, 1 + dj : values.shape[1] - 1 + dj]
    cells = [(i + 1, j + 1) for i, j in zip(*np.nonzero(lower))]
    return sorted(cells, key=lambda c: values[c])


def one_gaussian(steps=1500, batch_size=256, seed=0, every=50, losses=("minimax", "non_saturating"),
                 learning_rates=(2e-3, 2e-2), d_steps=1, warmup=0.2, toys=TOYS):
    """For each (name, p_data) of `toys`, three fits N(mu, sigma^2) of p_data:
      ml       the maximum-likelihood fit (moments), which minimises KL(p_data || q);
      jsd_min  the JSD's minimum over the grid MUS x SIGMAS (jsd_local_minima:
               every local minimum of that grid, lowest first);
      gan      G(z) = mu + sigma z trained against a D (train_gan: D of width 32,
               learning rates 2e-3 for D and 2e-2 for G, G's warmed up over
               the first `warmup` of the steps) with each of `losses`, from
               three starts: the ML fit and each component of p_data.
    each with kl = KL(p_data || q) and jsd = JSD(p_data || q), computed on WIDE_GRID.

    Returns {"figures": {toy: {...}}, "curves": {toy: {x, p_data, jsd (the
    landscape), paths [(loss, [[mu, sigma] at each checkpoint]), ...]}}}."""
    x = np.linspace(*WIDE_GRID)
    runs = [(name, components, loss, start) for name, components in toys for loss in losses
            for start in (moments(components),) + tuple((m, s) for _, m, s in components)]
    generator = paired_gaussians([start for *_, start in runs])
    paths = [[] for _ in runs]

    def checkpoint(step):
        mu, sigma = np.ravel(generator.bias), np.abs(np.ravel(generator.kernel))
        for path, m, s in zip(paths, mu, sigma):
            path.append((float(m), float(s)))

    train_gan(generator, [c for _, c, _, _ in runs], [loss for _, _, loss, _ in runs], steps, batch_size,
              learning_rates=learning_rates, d_steps=d_steps, seed=seed, every=every, checkpoint=checkpoint, d_width=32,
              warmup=int(warmup * steps))
    figures, curves = {}, {}
    for name, components in toys:
        p = mixture_pdf(x, components)

        def fit(mu, sigma):
            sigma = max(sigma, 1e-6)  # a G whose sigma collapsed to 0 is a point mass: KL and JSD as for 1e-6
            q = np.exp(gaussian_logpdf(x, mu, sigma))
            return {"mu": _round(mu), "sigma": _round(sigma), "kl": _round(kl_to_gaussian(x, p, mu, sigma)),
                    "jsd": _round(jsd(x, p, q))}

        landscape = jsd_landscape(x, p)
        best = np.unravel_index(landscape.argmin(), landscape.shape)
        mine = [(r, path) for r, path in zip(runs, paths) if r[0] == name]
        figures[name] = {
            "ml": fit(*moments(components)),
            "jsd_min": fit(MUS[best[0]], SIGMAS[best[1]]),
            "jsd_local_minima": [fit(MUS[i], SIGMAS[j]) for i, j in local_minima(landscape)],
            "gan": [{"loss": loss, "start": [_round(v, 3) for v in start], **fit(*path[-1])}
                    for (_, _, loss, start), path in mine],
        }
        curves[name] = {"x": x, "p_data": p, "jsd": landscape,
                        "paths": [(loss, np.array(path)) for (_, _, loss, _), path in mine]}
    return {"figures": figures, "curves": curves}


LOSS_COLOURS = {"minimax": "tab:green", "non_saturating": "tab:orange"}


def plot_one_gaussian(path, result):
    """Per toy: the densities of the fits over p_data (left), and the JSD over
    (mu, sigma) with the fits and the GAN fits' paths (right)."""
    toys = [(name, components) for name, components in TOYS if name in result["figures"]]
    fig, axes = plots.pyplot().subplots(len(toys), 2, figsize=(12, 4.2 * len(toys)), dpi=100, squeeze=False)
    for (name, components), (a, b) in zip(toys, axes):
        f, c = result["figures"][name], result["curves"][name]
        x = c["x"]
        keep = (x >= -7.0) & (x <= 7.0)
        a.plot(x[keep], c["p_data"][keep], color="black", linewidth=2.5, label="p_data")
        for key, colour, style, label in (("ml", "tab:blue", "--", "max. likelihood (min KL)"),
                                          ("jsd_min", "tab:red", "-", "min JSD (grid)")):
            fit = f[key]
            a.plot(x[keep], np.exp(gaussian_logpdf(x[keep], fit["mu"], fit["sigma"])), color=colour, linestyle=style,
                   linewidth=2, label=f"{label}: N({fit['mu']:.2f}, {fit['sigma']:.2f}^2), KL {fit['kl']:.3f}, "
                                      f"JSD {fit['jsd']:.3f}")
        for loss, trajectory in c["paths"]:  # the unrounded end: a collapsed sigma may round to 0
            mu, sigma = trajectory[-1]
            a.plot(x[keep], np.exp(gaussian_logpdf(x[keep], mu, max(sigma, 1e-3))), color=LOSS_COLOURS[loss],
                   linewidth=1, alpha=0.8)
        for loss, colour in LOSS_COLOURS.items():
            ends = ", ".join(f"{g['mu']:.1f}/{g['sigma']:.1f}" for g in f["gan"] if g["loss"] == loss)
            a.plot([], [], color=colour, linewidth=1, label=f"GAN, {loss} loss (mu/sigma: {ends})")
        a.set(ylim=(0.0, 1.6 * c["p_data"].max()), xlabel="x")
        a.set_title(f"{name.replace('_', ' ')}: p_data = " + " + ".join(
            f"{w:g} N({m:g}, {s:g}^2)" for w, m, s in components), fontsize="medium")
        a.legend(fontsize="x-small", loc="upper left")
        levels = np.quantile(c["jsd"], np.linspace(0.0, 0.6, 13))
        contour = b.contourf(MUS, SIGMAS, c["jsd"].T, levels=np.unique(levels), cmap="Greys_r", extend="max")
        fig.colorbar(contour, ax=b, label="JSD(p_data || N(mu, sigma^2))")
        b.set(yscale="log", xlabel="mu", ylabel="sigma (log scale)")
        for loss, trajectory in c["paths"]:
            b.plot(trajectory[:, 0], trajectory[:, 1], color=LOSS_COLOURS[loss], linewidth=1)
            b.plot(*trajectory[0], "o", color=LOSS_COLOURS[loss], markerfacecolor="none", markersize=5)
            b.plot(*trajectory[-1], "o", color=LOSS_COLOURS[loss], markersize=5)
        b.plot(f["ml"]["mu"], f["ml"]["sigma"], "x", color="tab:blue", markersize=11, mew=3, label="max. likelihood",
               zorder=5)
        for i, m in enumerate(f["jsd_local_minima"]):  # above the paths, which end on them
            b.plot(m["mu"], m["sigma"], "*" if i == 0 else "v", color="tab:red", markersize=14 if i == 0 else 9,
                   markeredgecolor="white", zorder=5,
                   label="JSD: global minimum" if i == 0 else ("JSD: local minima" if i == 1 else None))
        b.set_title("the JSD over one Gaussian; GAN paths (open: start, filled: end)", fontsize="medium")
        b.legend(fontsize="x-small", loc="upper left")
    return plots.save(fig, path)


# -- the command ---------------------------------------------------------------


def run(workdir, modes, out=None, pairs=4, steps=10, triples=None, theory_steps=5000, seed=0, gan_steps=2000,
        fit_steps=1500, draws=2000, confidence=0.9, cache_dir=evaluate.CACHE_DIR):
    """Runs the chosen modes (of MODES); returns ([(path written, what it
    shows), ...], figures: a dict, empty when no mode measures anything)."""
    if not modes:
        raise ExploreError("choose what to explore: --interpolate, --arithmetic, --traverse (these need --workdir) "
                           "or --theory")
    if out and len(modes) > 1:
        raise ExploreError("--out names one file: give one of --interpolate, --arithmetic, --traverse, --theory with it")
    written, figures = [], {}

    def path(filename):
        return out or os.path.join(workdir or "", "explore", filename)

    if {"interpolate", "arithmetic", "traverse"} & set(modes):
        if not workdir:
            raise ExploreError("--interpolate, --arithmetic and --traverse need --workdir=W, a train.run workdir "
                               "holding model.keras")
        if pairs < 1 or steps < 2:
            raise ExploreError(f"--pairs must be >= 1 and --steps >= 2 (got {pairs} and {steps})")
        if not 0.0 <= confidence <= 1.0 or draws < 1:
            raise ExploreError(f"--confidence must be in [0, 1] and --draws >= 1 (got {confidence} and {draws})")
        model, config, dataset = evaluate.load_run(workdir)
        encoders = ", ".join(encoder_models())
        if "interpolate" in modes:
            if not model.can("encoder"):
                logging.warning("%s has no encoder (models with one: %s): interpolating between prior draws "
                                "z ~ N(0, I) instead of test images", config["model"], encoders)
            images, columns, note = interpolation_rows(model, dataset, pairs, steps, seed)
            written.append((write_grid(path("interpolate.png"), images, columns), note))
        if "arithmetic" in modes:
            if model.can("encoder"):
                pool, kind = encoded_pool(model, dataset), "test triples a,b,c (labels)"
            else:
                logging.warning("%s has no encoder (models with one: %s): the arithmetic is on the latents of "
                                "generated images, classified by train.evaluate's classifier", config["model"],
                                encoders)
                pool, figures["generated"] = generated_pool(model, dataset, evaluate.classifier(dataset, cache_dir)[0],
                                                            draws, confidence, seed)
                kind = f"{len(pool.images)} of {draws} generated images kept; triples a,b,c of them (classes)"
            target = path("arithmetic.png")
            chosen = (parse_triples(triples, len(pool.images), pool.name) if triples
                      else default_triples(pool.images, pool.labels))
            y = pool.labels
            shown = "; ".join(f"{a},{b},{c} ({y[a]},{y[b]},{y[c]})" for a, b, c in chosen)
            written.append((write_grid(target, arithmetic_rows(model, pool, chosen), 4), f"{kind} {shown}"))
            images, columns = class_mean_rows(model, pool)
            means_path = write_grid(os.path.splitext(target)[0] + "_class_means.png", images, columns)
            written.append((means_path, "rows: c, then decode(z_c - m_(y_c) + m_k) for every class k"))
        if "traverse" in modes:
            images, figures["traverse"] = traversal_rows(model, dataset, steps, seed)
            written.append((write_grid(path("traverse.png"), images, steps),
                            f"row j: z_j from -{TRAVERSE_LIMIT:g} to {TRAVERSE_LIMIT:g} around "
                            f"{figures['traverse']['base']}"))
    if "theory" in modes:
        if min(theory_steps, gan_steps, fit_steps) < 1:
            raise ExploreError(f"--theory_steps, --gan_steps and --fit_steps must be >= 1 "
                               f"(got {theory_steps}, {gan_steps} and {fit_steps})")
        target = path("theory.png")
        result = theory(theory_steps, seed=seed)
        written.append((plot_theory(target, result), "p_data, p_g, D* and the trained D"))
        figures.update(result["figures"])
        stem = os.path.splitext(target)[0]
        result = gan_theory(gan_steps, seed=seed)
        written.append((plot_gan(stem + "_gan.png", result), "a 1-D GAN: p_g at checkpoints, JSD(p_data || p_g)"))
        figures["gan"] = result["figures"]
        result = one_gaussian(fit_steps, seed=seed)
        written.append((plot_one_gaussian(stem + "_ml_vs_gan.png", result),
                        "one Gaussian fitted by maximum likelihood, by the JSD's grid minimum and by GANs"))
        figures["one_gaussian"] = result["figures"]
    return written, figures


def main(argv):
    logging.set_verbosity(logging.WARNING)
    cli.no_positional_arguments(argv)
    modes = [m for m in MODES if FLAGS[m].value]
    try:
        written, figures = run(FLAGS.workdir, modes, FLAGS.out, FLAGS.pairs, FLAGS.steps, FLAGS.triples,
                               FLAGS.theory_steps, FLAGS.seed, FLAGS.gan_steps, FLAGS.fit_steps, FLAGS.draws,
                               FLAGS.confidence, FLAGS.cache_dir)
    except (ExploreError, evaluate.EvaluationError) as e:
        cli.fail(e)
    for path, note in written:
        print(f"wrote {path}: {note}")
    if figures:
        print(json.dumps(figures))


if __name__ == "__main__":
    define_flags()
    app.run(main)
