"""Look inside a trained model, and at the theory of the GAN game:

  python -m train.explore --workdir=W --interpolate [--pairs=4] [--steps=10] [--out=PATH]
  python -m train.explore --workdir=W --arithmetic [--triples="a,b,c;..."] [--out=PATH]
  python -m train.explore --theory [--workdir=W] [--out=PATH]

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
--theory       explore/theory.png (W/explore/theory.png with --workdir) and one
               JSON line: a small MLP discriminator D trained on samples of two
               known 1-D densities against D*(x) = p_data / (p_data + p_g), and
               the value V(G, D) against -2 log 2 + 2 JSD(p_data || p_g); see
               `theory`.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

import zoo  # noqa: E402  (registers the model classes for load_model)
from train import cli  # noqa: E402
from train import callbacks, evaluate  # noqa: E402
from train import workdir as workdirs  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags. Defined only when it runs as a program (see the end of
    the file), so that tests and scripts can import these functions next to
    train.run or train.evaluate, whose --workdir and --seed would otherwise clash."""
    flags.DEFINE_string("workdir", None, "a train.run workdir holding model.keras (not needed for --theory)")
    flags.DEFINE_bool("interpolate", False, "write interpolations between the codes of test image pairs")
    flags.DEFINE_bool("arithmetic", False, "write latent arithmetic decode(z_a - z_b + z_c) of test images")
    flags.DEFINE_bool("theory", False, "compare a trained discriminator with the optimal D* on two 1-D densities")
    flags.DEFINE_integer("pairs", 4, "--interpolate: pairs of test images (two rows each)")
    flags.DEFINE_integer("steps", 10, "--interpolate: values of t from 0 to 1 in each row")
    flags.DEFINE_string("triples", None, "--arithmetic: test-split indices 'a,b,c;a,b,c;...' (default: see the module doc)")
    flags.DEFINE_integer("theory_steps", 5000, "--theory: discriminator training steps")
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


def parse_triples(text, n):
    """'a,b,c;a,b,c' -> [(a, b, c), ...] of indices into a split of n images."""
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
            raise ExploreError(f"--triples: index {bad[0]} is outside the test split (0 .. {n - 1})")
        triples.append(triple)
    if not triples:
        raise ExploreError("--triples is empty; give 'a,b,c;...' or leave it out for the default")
    return triples


def arithmetic_rows(model, dataset, triples):
    """Images [4 * len(triples), H, W, C]: per triple a, b, c, decode(z_a - z_b + z_c)
    (conditional models decode with c's label)."""
    x, y = dataset.test_images, dataset.test_labels
    dec, rows = decoder(model), []
    for a, b, c in triples:
        z_a, z_b, z_c = model.encode_all(x[[a, b, c]], y[[a, b, c]])
        rows += [x[[a, b, c]], dec((z_a - z_b + z_c)[None], y[[c]])]
    return np.concatenate(rows)


def class_mean_rows(model, dataset):
    """(images, columns): per class, c (its median-ink test image) then
    decode(z_c - m_{y_c} + m_k) for every class k, m_k the mean test code of class k."""
    x, y = dataset.test_images, dataset.test_labels
    codes = model.encode_all(x, y)
    classes = np.unique(y)
    means = np.stack([codes[y == k].mean(0) for k in classes])
    dec, rows = decoder(model), []
    for k in classes:
        by_ink = _by_ink(x, y, k)
        c = by_ink[len(by_ink) // 2]
        z = codes[c] - means[np.searchsorted(classes, y[c])] + means
        rows += [x[c : c + 1], dec(z, classes.astype(np.int32))]
    return np.concatenate(rows), len(classes) + 1


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
    """JSD(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, KL(p || m) = int p log(p / m) dx."""
    m = (p + q) / 2.0
    safe = np.where(m > 0, m, 1.0)
    return float(0.5 * np.trapezoid(_xlogy(p, p / safe), x) + 0.5 * np.trapezoid(_xlogy(q, q / safe), x))


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


# -- the command ---------------------------------------------------------------


def run(workdir, modes, out=None, pairs=4, steps=10, triples=None, theory_steps=5000, seed=0):
    """Runs the chosen modes (of "interpolate", "arithmetic", "theory"); returns
    ([(path written, what it shows), ...], theory figures or None)."""
    if not modes:
        raise ExploreError("choose what to explore: --interpolate, --arithmetic (both need --workdir) or --theory")
    if out and len(modes) > 1:
        raise ExploreError("--out names one file: give one of --interpolate, --arithmetic, --theory with it")
    written, figures = [], None

    def path(filename):
        return out or os.path.join(workdir or "", "explore", filename)

    if {"interpolate", "arithmetic"} & set(modes):
        if not workdir:
            raise ExploreError("--interpolate and --arithmetic need --workdir=W, a train.run workdir holding model.keras")
        if pairs < 1 or steps < 2:
            raise ExploreError(f"--pairs must be >= 1 and --steps >= 2 (got {pairs} and {steps})")
        model, config, dataset = evaluate.load_run(workdir)
        encoders = ", ".join(encoder_models())
        if "arithmetic" in modes and not model.can("encoder"):
            raise ExploreError(
                f"{workdir} holds a {config['model']}, which has no encoder: --arithmetic needs one of {encoders}"
            )
        chosen = parse_triples(triples, len(dataset.test_images)) if triples else None
        if "interpolate" in modes:
            if not model.can("encoder"):
                logging.warning("%s has no encoder (models with one: %s): interpolating between prior draws "
                                "z ~ N(0, I) instead of test images", config["model"], encoders)
            images, columns, note = interpolation_rows(model, dataset, pairs, steps, seed)
            written.append((write_grid(path("interpolate.png"), images, columns), note))
        if "arithmetic" in modes:
            target = path("arithmetic.png")
            triples_ = chosen or default_triples(dataset.test_images, dataset.test_labels)
            y = dataset.test_labels
            shown = "; ".join(f"{a},{b},{c} ({y[a]},{y[b]},{y[c]})" for a, b, c in triples_)
            written.append((write_grid(target, arithmetic_rows(model, dataset, triples_), 4),
                            f"test triples a,b,c (labels) {shown}"))
            images, columns = class_mean_rows(model, dataset)
            class_means = write_grid(os.path.splitext(target)[0] + "_class_means.png", images, columns)
            written.append((class_means, "rows: c, then decode(z_c - m_(y_c) + m_k) for every class k"))
    if "theory" in modes:
        result = theory(theory_steps, seed=seed)
        written.append((plot_theory(path("theory.png"), result), "p_data, p_g, D* and the trained D"))
        figures = result["figures"]
    return written, figures


def main(argv):
    logging.set_verbosity(logging.WARNING)
    cli.no_positional_arguments(argv)
    modes = [m for m in ("interpolate", "arithmetic", "theory") if FLAGS[m].value]
    try:
        written, figures = run(FLAGS.workdir, modes, FLAGS.out, FLAGS.pairs, FLAGS.steps, FLAGS.triples,
                               FLAGS.theory_steps, FLAGS.seed)
    except (ExploreError, evaluate.EvaluationError) as e:
        cli.fail(e)
    for path, note in written:
        print(f"wrote {path}: {note}")
    if figures is not None:
        print(json.dumps(figures))


if __name__ == "__main__":
    define_flags()
    app.run(main)
