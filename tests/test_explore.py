"""train.explore: interpolation maths, the optimal discriminator, and the command on tiny runs."""

import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import run_module
from train import explore

DIGITS = ["--dataset=digits", "--net=mlp", "--batch_size=32", "--steps_per_epoch=3", "--epochs=1", "--verbose=0"]


def last_line(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def grid_size(rows, columns, h=8, w=8):
    """(width, height) of a train.callbacks.image_grid PNG enlarged by explore.grid_scale."""
    s = explore.grid_scale(h)
    return ((w + 1) * columns + 1) * s, ((h + 1) * rows + 1) * s


# -- lerp and slerp -----------------------------------------------------------


def test_lerp_endpoints_and_midpoint():
    a, b = np.array([1.0, -2.0, 3.0]), np.array([5.0, 0.0, -1.0])
    out = explore.lerp(a, b, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[2], b)
    np.testing.assert_allclose(out[1], [3.0, -1.0, 1.0])


def test_slerp_of_orthogonal_unit_vectors_follows_the_circle():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    out = explore.slerp(a, b, [0.0, 1.0 / 3.0, 0.5, 1.0])
    np.testing.assert_array_equal(out[0], a)  # the endpoints exactly
    np.testing.assert_allclose(out[-1], b, atol=1e-15)
    np.testing.assert_allclose(out[2], (a + b) / math.sqrt(2.0), atol=1e-15)
    np.testing.assert_allclose(out[1], [math.cos(math.pi / 6), math.sin(math.pi / 6)], atol=1e-15)


def test_slerp_keeps_the_norm_of_equal_norm_endpoints():
    rng = np.random.RandomState(0)
    a, b = rng.randn(16), rng.randn(16)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    t = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(np.linalg.norm(explore.slerp(a, b, t), axis=1), np.linalg.norm(a), rtol=1e-12)
    np.testing.assert_allclose(explore.slerp(a, b, t)[[0, -1]], [a, b], atol=1e-12)
    # the straight line cuts through the inside of the sphere
    assert np.linalg.norm(explore.lerp(a, b, [0.5])) < 0.9 * np.linalg.norm(a)


def test_slerp_of_parallel_vectors_is_lerp():
    a = np.array([1.0, 2.0])
    t = np.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(explore.slerp(a, 3 * a, t), explore.lerp(a, 3 * a, t))
    assert np.isfinite(explore.slerp(np.zeros(2), a, t)).all()


# -- choosing test images -----------------------------------------------------


def test_pairs_are_reproducible_and_of_different_classes():
    labels = np.repeat(np.arange(5), 20)
    pairs = explore.pick_pairs(labels, 6, seed=3)
    assert pairs == explore.pick_pairs(labels, 6, seed=3) and len(pairs) == 6
    assert all(labels[a] != labels[b] for a, b in pairs)


def test_default_triples_take_bold_and_thin_of_one_class_and_a_median_of_the_next(digits):
    x, y = digits.test_images, digits.test_labels
    triples = explore.default_triples(x, y)
    ink = x.reshape(len(x), -1).mean(1)
    assert len(triples) == 10
    for k, (a, b, c) in enumerate(triples):
        assert y[a] == y[b] == k and y[c] == (k + 1) % 10
        assert ink[a] == ink[y == k].max() and ink[b] == ink[y == k].min()


@pytest.mark.parametrize("text, message", [("1,2", "not three indices"), ("1,2,x", "not three indices"),
                                           ("1,2,999", "index 999 is outside"), (";", "empty")])
def test_bad_triples_are_one_line_errors(text, message):
    with pytest.raises(explore.ExploreError, match=message):
        explore.parse_triples(text, 180)
    assert explore.parse_triples("0,1,2; 3,4,5", 180) == [(0, 1, 2), (3, 4, 5)]


# -- the optimal discriminator ------------------------------------------------


def test_value_at_d_star_is_minus_2_log_2_plus_2_jsd():
    x = np.linspace(*explore.GRID)
    p, q = explore.mixture_pdf(x, explore.P_DATA), explore.mixture_pdf(x, explore.P_G)
    jsd = explore.jsd(x, p, q)
    assert 0.0 < jsd < math.log(2.0)
    assert abs(explore.value_optimal(x, p, q) - (-2 * math.log(2) + 2 * jsd)) < 1e-4
    # the clipped value() agrees at D*, and D* beats any other D
    d_star = explore.optimal_discriminator(p, q)
    assert abs(explore.value(x, p, q, d_star) - explore.value_optimal(x, p, q)) < 1e-4
    assert explore.value(x, p, q, np.full_like(x, 0.5)) < explore.value_optimal(x, p, q)
    # JSD is 0 for equal densities and log 2 for disjoint ones
    assert abs(explore.jsd(x, p, p)) < 1e-12
    far = explore.mixture_pdf(x, ((1.0, -5.0, 0.3),)), explore.mixture_pdf(x, ((1.0, 5.0, 0.3),))
    assert abs(explore.jsd(x, *far) - math.log(2.0)) < 1e-4


def test_mixture_samples_follow_the_density():
    s = explore.mixture_sample(np.random.RandomState(0), 200_000, explore.P_DATA)
    assert abs(s.mean() - (0.5 * -2.0 + 0.5 * 1.5)) < 0.01
    assert abs((s < -0.25).mean() - 0.5) < 0.005  # the left component's mass


def test_trained_discriminator_matches_d_star():
    result = explore.theory(steps=600, batch_size=256, seed=0)  # a few seconds on CPU
    f, c = result["figures"], result["curves"]
    assert f["d_star_mean_error"] < 0.05 and f["d_star_max_error"] < 0.25, f
    assert abs(f["v_trained"] - f["v_theory"]) < 0.02, f
    assert abs(f["v_optimal"] - f["v_theory"]) < 1e-4, f
    # the bars catch a wrong formula: D = p_g / (p_data + p_g) is far from D* and from V(D*)
    x, p, q = c["x"], c["p_data"], c["p_g"]
    wrong = q / (p + q)
    mass = p + q > explore.MASS
    assert np.abs(wrong - c["d_star"])[mass].mean() > 0.2
    assert abs(explore.value(x, p, q, wrong) - f["v_theory"]) > 0.5


def test_theory_plot_is_written(tmp_path):
    x = np.linspace(*explore.GRID)
    p, q = explore.mixture_pdf(x, explore.P_DATA), explore.mixture_pdf(x, explore.P_G)
    d = explore.optimal_discriminator(p, q)
    figures = {"d_star_max_error": 0.0, "d_star_mean_error": 0.0, "v_trained": 0.0, "v_optimal": 0.0,
               "v_theory": 0.0, "jsd": 0.0}
    path = explore.plot_theory(str(tmp_path / "t.png"), {
        "figures": figures, "curves": {"x": x, "p_data": p, "p_g": q, "d": d, "d_star": d}})
    assert Image.open(path).size == (900, 520)


def test_paired_dense_is_one_dense_layer_per_pair():
    layer = explore.PairedDense(3, 2, seed=1)
    x = np.random.RandomState(0).randn(3, 5, 4).astype(np.float32)
    y = np.asarray(layer(x))
    kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
    for p in range(3):
        np.testing.assert_allclose(y[p], x[p] @ kernel[p] + bias[p], rtol=1e-5, atol=1e-6)
    g = explore.paired_gaussians([(-1.0, 0.5), (2.0, 3.0)])
    np.testing.assert_allclose(np.asarray(g(np.ones((2, 1, 1), np.float32)))[:, 0, 0], [-0.5, 5.0])


def test_pushforward_density_of_the_quantile_function_is_p_data():
    x = (explore.BINS[1:] + explore.BINS[:-1]) / 2
    p = explore.binned(explore.P_DATA)
    assert abs(np.sum(p * np.diff(explore.BINS)) - 1.0) < 1e-6
    exact = explore.pushforward_density(lambda z: explore.mixture_quantile(explore.P_DATA, explore.special.ndtr(z)))
    assert explore.jsd(x, p, exact) < 1e-4  # the estimator's floor
    # G(z) = 1.5 z is N(0, 1.5^2): the estimate gives the JSD of P_G against p_data computed on the fine grid
    fine = np.linspace(*explore.GRID)
    reference = explore.jsd(fine, explore.mixture_pdf(fine, explore.P_DATA), explore.mixture_pdf(fine, explore.P_G))
    assert abs(explore.jsd(x, p, explore.pushforward_density(lambda z: 1.5 * z)) - reference) < 2e-3


@pytest.fixture(scope="module")
def gan_1d():
    return explore.gan_theory(steps=200, batch_size=128, every=100, warmup=0.25, shown=(0, 100))


def test_a_1d_gan_brings_p_g_towards_p_data(gan_1d, tmp_path):
    f = gan_1d["figures"]
    assert f["jsd_start"] > 0.4 and f["jsd_final"] < 0.15, f  # from a point mass to both modes
    assert sorted(f["jsd_at"]) == ["0", "100", "200"] and f["jsd_floor"] < 1e-4
    assert Image.open(explore.plot_gan(str(tmp_path / "g.png"), gan_1d)).size == (1100, 400)


def test_the_ml_fit_is_the_mixtures_moments_and_minimises_kl():
    mu, sigma = explore.moments(explore.P_DATA)
    assert (mu, round(sigma, 4)) == (-0.25, 1.8625)  # 1/2 (-2 + 1.5); sqrt(1/2 (0.25 + 4 + 0.5625 + 2.25) - mu^2)
    x = np.linspace(*explore.WIDE_GRID)
    p = explore.mixture_pdf(x, explore.P_DATA)
    best = explore.kl_to_gaussian(x, p, mu, sigma)
    for dm, ds in ((0.05, 1.0), (-0.05, 1.0), (0.0, 1.03), (0.0, 0.97)):
        assert explore.kl_to_gaussian(x, p, mu + dm, sigma * ds) > best
    # KL(p || p) = 0, and KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1) / 8 - 1/2
    assert abs(explore.kl_to_gaussian(x, explore.mixture_pdf(x, ((1.0, 0.3, 0.7),)), 0.3, 0.7)) < 1e-9
    normal = explore.mixture_pdf(x, ((1.0, 0.0, 1.0),))
    assert abs(explore.kl_to_gaussian(x, normal, 1.0, 2.0) - (math.log(2.0) + 2.0 / 8.0 - 0.5)) < 1e-9


def test_the_jsd_grid_minimum_beats_the_ml_fit_and_finds_both_modes_when_they_are_far_apart():
    x = np.linspace(-25.0, 25.0, 501)  # as exact as WIDE_GRID here (see it), in half the time
    for name, components in explore.TOYS:
        p = explore.mixture_pdf(x, components)
        landscape = explore.jsd_landscape(x, p)
        i, j = np.unravel_index(landscape.argmin(), landscape.shape)
        mu, sigma = explore.moments(components)
        ml = explore.jsd(x, p, np.exp(explore.gaussian_logpdf(x, mu, sigma)))
        assert landscape[i, j] < ml, name
        q = np.exp(explore.gaussian_logpdf(x, explore.MUS[i], explore.SIGMAS[j]))
        assert abs(explore.jsd(x, p, q) - landscape[i, j]) < 1e-12  # the landscape is jsd() on the grid
        minima = [(round(explore.MUS[a], 2), explore.SIGMAS[b]) for a, b in explore.local_minima(landscape)]
        if name == "notes_toy":  # the global minimum covers both modes; fitting one mode is a local minimum
            assert abs(minima[0][0] - mu) < 0.2 and len(minima) == 2 and minima[1][0] == -2.0
        else:  # 6 apart: one mode (the two tie), and the covering fit is the local minimum
            assert {minima[0][0], minima[1][0]} == {-3.0, 3.0} and abs(minima[2][0]) < 0.5 and minima[2][1] > 2.5
    bowl = np.add.outer(np.arange(5.0) - 2, np.arange(4.0) - 1) ** 2  # min at (2, 1)
    assert explore.local_minima(bowl) == []  # ties are not minima
    bowl[2, 1] = -1.0
    assert explore.local_minima(bowl) == [(2, 1)]


@pytest.fixture(scope="module")
def one_gaussian():
    return explore.one_gaussian(steps=200, batch_size=128, every=100, warmup=0.25, losses=("minimax",),
                                toys=explore.TOYS[:1])


def test_one_gaussian_gans_move_towards_the_jsd_minimum(one_gaussian, tmp_path):
    result = one_gaussian
    notes = result["figures"]["notes_toy"]
    assert notes["ml"]["mu"] == -0.25 and notes["jsd_min"]["jsd"] < notes["ml"]["jsd"]
    assert notes["jsd_min"]["kl"] > notes["ml"]["kl"]  # ML minimises KL, not the JSD
    starts = {tuple(g["start"]): g for g in notes["gan"]}
    assert set(starts) == {(-0.25, 1.862), (-2.0, 0.5), (1.5, 0.75)}
    # from the left mode (a local minimum, JSD 0.213) the minimax GAN leaves towards the covering minimum
    assert starts[(-2.0, 0.5)]["sigma"] > 1.0 and starts[(-2.0, 0.5)]["jsd"] < 0.2, starts
    assert len(result["curves"]["notes_toy"]["paths"][0][1]) == 3  # steps 0, 100, 200
    assert Image.open(explore.plot_one_gaussian(str(tmp_path / "o.png"), result)).size == (1200, 420)


def test_theory_writes_three_plots_beside_each_other_and_one_set_of_figures(gan_1d, one_gaussian, tmp_path,
                                                                            monkeypatch):
    x = np.linspace(*explore.GRID)
    p, q = explore.mixture_pdf(x, explore.P_DATA), explore.mixture_pdf(x, explore.P_G)
    d = explore.optimal_discriminator(p, q)
    fixed = {"figures": {"d_star_max_error": 0.0, "d_star_mean_error": 0.0, "v_trained": 0.0, "v_optimal": 0.0,
                         "v_theory": 0.0, "jsd": 0.1}, "curves": {"x": x, "p_data": p, "p_g": q, "d": d, "d_star": d}}
    monkeypatch.setattr(explore, "theory", lambda steps, seed: fixed)  # each trained in the tests above
    monkeypatch.setattr(explore, "gan_theory", lambda steps, seed: gan_1d)
    monkeypatch.setattr(explore, "one_gaussian", lambda steps, seed: one_gaussian)
    written, figures = explore.run(None, ["theory"], str(tmp_path / "t.png"))
    assert [os.path.basename(path) for path, _ in written] == ["t.png", "t_gan.png", "t_ml_vs_gan.png"]
    assert all(os.path.exists(path) for path, _ in written)
    assert figures["jsd"] == 0.1 and figures["gan"] is gan_1d["figures"]
    assert figures["one_gaussian"] is one_gaussian["figures"]
    with pytest.raises(explore.ExploreError, match="must be >= 1"):
        explore.run(None, ["theory"], gan_steps=0)


# -- latent arithmetic without an encoder ------------------------------------


def test_confident_classes_keep_sure_and_consistent_predictions():
    probabilities = np.array([[0.95, 0.05], [0.6, 0.4], [0.02, 0.98], [0.91, 0.09]])
    predicted, kept = explore.confident_classes(probabilities, 0.9)
    assert predicted.tolist() == [0, 0, 1, 0] and kept.tolist() == [True, False, True, True]
    _, kept = explore.confident_classes(probabilities, 0.9, given=np.array([0, 0, 1, 1]))
    assert kept.tolist() == [True, False, True, False]  # a conditional draw counts only as its own label


def test_class_means_are_per_class_averages():
    codes = np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [-1.0, 4.0]])
    classes, means = explore.class_means(codes, np.array([2, 2, 7, 2]))
    assert classes.tolist() == [2, 7]
    np.testing.assert_allclose(means, [[1.0, 2.0], [10.0, 10.0]])


# -- the command --------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, train_run):
    workdir = str(tmp_path_factory.mktemp("vae") / "w")
    proc = train_run("--model=vae", "--latent_dim=4", f"--workdir={workdir}", *DIGITS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_interpolate_writes_rows_of_real_ends_and_decoded_codes(vae_run, tmp_path):
    out = tmp_path / "i.png"
    proc = run_module("train.explore", f"--workdir={vae_run}", "--interpolate", "--pairs=2", "--steps=5",
                      f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}: test pairs (labels) " in proc.stdout
    assert Image.open(out).size == grid_size(rows=4, columns=7)  # lerp + slerp per pair, 5 steps + 2 ends


def test_arithmetic_writes_the_vector_additions(vae_run):
    explore.run(vae_run, ["arithmetic"])  # (the command itself: test_interpolate_writes_rows_of_real_ends_...)
    explore_dir = os.path.join(vae_run, "explore")
    assert Image.open(os.path.join(explore_dir, "arithmetic.png")).size == grid_size(rows=10, columns=4)
    class_means = Image.open(os.path.join(explore_dir, "arithmetic_class_means.png"))
    assert class_means.size == grid_size(rows=10, columns=11)


def test_arithmetic_of_given_triples(vae_run, tmp_path):
    written, _ = explore.run(vae_run, ["arithmetic"], str(tmp_path / "a.png"), triples="0,1,2;3,4,5")
    assert [path for path, _ in written] == [str(tmp_path / "a.png"), str(tmp_path / "a_class_means.png")]
    assert written[0][1].startswith("test triples a,b,c (labels) 0,1,2 (")
    assert Image.open(written[0][0]).size == grid_size(rows=2, columns=4)


def test_traverse_writes_one_row_per_latent_dimension(vae_run, tmp_path):
    out = tmp_path / "t.png"
    written, figures = explore.run(vae_run, ["traverse"], str(out), steps=5, seed=1)
    assert Image.open(out).size == grid_size(rows=4, columns=5)  # latent_dim=4, 5 values of z_j
    traverse = figures["traverse"]
    assert traverse["base"].startswith("encode(x) of test image ") and traverse["base"] in written[0][1]
    assert traverse["values"] == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert len(traverse["pixel_change"]) == 4 and max(traverse["pixel_change"]) > 0


def test_traversal_without_an_encoder_sweeps_around_the_prior_mode_and_finds_an_ignored_dimension(digits):
    import zoo

    model = zoo.build("gan", image_shape=digits.image_shape, latent_dim=3, net="mlp", ema_decay=0.0)
    kernel = model.generator.layers[1].kernel  # the first Dense: row j reads z_j
    kernel.assign(np.concatenate([np.zeros_like(kernel[:1]), kernel[1:]]))  # G ignores z_0
    images, figures = explore.traversal_rows(model, digits, steps=5)
    assert images.shape == (3 * 5, *digits.image_shape)
    assert figures["base"] == "z = 0, the prior's mode"
    rows = images.reshape(3, 5, -1)
    np.testing.assert_allclose(rows[:, 2], np.repeat(rows[:1, 2], 3, axis=0), atol=1e-6)  # z_j = 0: the base, G(0)
    np.testing.assert_allclose(rows[0], np.repeat(rows[0, :1], 5, axis=0), atol=1e-6)
    assert figures["pixel_change"][0] < 1e-6 < min(figures["pixel_change"][1:])


def test_a_gan_interpolates_prior_draws_and_does_arithmetic_on_classified_draws(train_run, tmp_path):
    workdir = tmp_path / "gan"
    proc = train_run("--model=gan", "--latent_dim=4", f"--workdir={workdir}", *DIGITS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_module("train.explore", f"--workdir={workdir}", "--interpolate", "--pairs=2", "--steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interpolating between prior draws" in proc.stderr
    assert Image.open(workdir / "explore" / "interpolate.png").size == grid_size(rows=4, columns=5)
    # an untrained G's digits are unsure: keep every draw (--confidence=0), classed by its most likely digit
    proc = run_module("train.explore", f"--workdir={workdir}", "--arithmetic", "--draws=120", "--confidence=0",
                      f"--cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the arithmetic is on the latents of generated images" in proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])["generated"]
    assert figures["draws"] == figures["kept"] == sum(figures["class_counts"]) == 120
    classes = sum(1 for n in figures["class_counts"] if n)
    assert "wrote " + str(workdir / "explore" / "arithmetic.png") + ": 120 of 120 generated images kept" in proc.stdout
    assert Image.open(workdir / "explore" / "arithmetic.png").size == grid_size(rows=classes, columns=4)
    means = Image.open(workdir / "explore" / "arithmetic_class_means.png")
    assert means.size == grid_size(rows=classes, columns=classes + 1)


def test_an_untrained_workdir_is_a_one_line_error(tmp_path):
    proc = run_module("train.explore", f"--workdir={tmp_path / 'missing'}", "--interpolate", timeout=120)
    assert proc.returncode == 2
    assert re.search(r"no trained model in .*missing.*; run train.run first", last_line(proc)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("workdir, modes, out, message", [
    (None, ["arithmetic"], None, "need --workdir=W"),
    (None, ["traverse"], None, "need --workdir=W"),
    ("w", [], None, "choose what to explore"),
    (None, ["interpolate", "theory"], "x.png", "--out names one file"),
])
def test_bad_choices_are_explore_errors(workdir, modes, out, message):
    with pytest.raises(explore.ExploreError, match=message):
        explore.run(workdir, modes, out)
