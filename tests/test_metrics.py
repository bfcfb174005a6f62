import numpy as np
import pytest

from zoo import metrics


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.RandomState(0).randn(500, 8)
    assert abs(metrics.frechet_feature_distance(x, x)) < 1e-6


def test_frechet_distance_of_two_gaussians_is_the_closed_form():
    # N(m1, s1^2 I) vs N(m2, s2^2 I) in d dims: |m1 - m2|^2 + d (s1 - s2)^2
    d, m1, m2, s1, s2 = 4, np.zeros(4), np.full(4, 0.5), 1.0, 2.0
    exact = np.sum((m1 - m2) ** 2) + d * (s1 - s2) ** 2
    got = metrics.frechet_distance(m1, s1**2 * np.eye(d), m2, s2**2 * np.eye(d))
    assert got == pytest.approx(exact, rel=1e-6)
    rng = np.random.RandomState(1)  # and from samples, within sampling error
    a, b = m1 + s1 * rng.randn(20000, d), m2 + s2 * rng.randn(20000, d)
    assert metrics.frechet_feature_distance(a, b) == pytest.approx(exact, rel=0.05)


def test_precision_and_recall():
    rng = np.random.RandomState(0)
    real = rng.randn(400, 2)
    same = rng.randn(400, 2)
    p, r = metrics.precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    collapsed = 0.01 * rng.randn(400, 2) + real[0]  # every sample at one real point
    p, r = metrics.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.1
    far = rng.randn(400, 2) + 20.0
    p, r = metrics.precision_recall(real, far)
    assert p == 0.0 and r == 0.0


def test_density_and_coverage():
    rng = np.random.RandomState(0)
    real = rng.randn(1000, 2)
    density, coverage = metrics.density_coverage(real, rng.randn(1000, 2), k=5)
    assert abs(density - 1.0) < 0.1  # E[density] = 1 for fakes from the real law
    assert abs(coverage - (1 - 0.5**5)) < 0.03  # E[coverage] -> 1 - 2^-k
    collapsed = 0.01 * rng.randn(1000, 2)  # every fake at the densest real point
    density, coverage = metrics.density_coverage(real, collapsed, k=5)
    assert density > 0.8 and coverage < 0.05  # as dense as the data there, but covers almost nothing
    density, coverage = metrics.density_coverage(real, rng.randn(1000, 2) + 20.0, k=5)
    assert density == 0.0 and coverage == 0.0


def test_class_histogram_entropy():
    hist, h = metrics.class_histogram(np.arange(1000) % 10, 10)
    assert hist == [0.1] * 10 and h == pytest.approx(np.log(10))
    _, h = metrics.class_histogram(np.zeros(50, int), 10)
    assert h == 0.0


def test_linear_probe_separates_separable_codes_and_not_noise():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, 600)
    codes = np.eye(3)[labels] * 3 + 0.3 * rng.randn(600, 3)
    assert metrics.linear_probe_accuracy(codes[:400], labels[:400], codes[400:], labels[400:]) > 0.95
    noise = rng.randn(600, 3)
    assert metrics.linear_probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]) < 0.5


def test_code_statistics_of_standard_normal_codes():
    stats = metrics.code_statistics(np.random.RandomState(0).randn(20000, 4))
    assert stats["code_mean_abs_max"] < 0.05 and abs(stats["code_var_mean"] - 1) < 0.05
    assert stats["code_cov_offdiag_abs_mean"] < 0.05


def test_kernel_distance_is_the_unbiased_polynomial_mmd():
    rng = np.random.RandomState(0)
    x, y = rng.randn(6, 3), rng.randn(5, 3) + 1.0
    k = lambda a, b: (a @ b.T / 3 + 1.0) ** 3  # noqa: E731
    m = 5  # one draw of 5 rows of each, as kernel_distance draws them with seed 7
    draw = np.random.RandomState(7)
    xi, yi = x[draw.choice(6, m, replace=False)], y[draw.choice(5, m, replace=False)]
    kxx, kyy, kxy = k(xi, xi), k(yi, yi), k(xi, yi)
    expected = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert metrics.kernel_distance(x, y, subsets=1, subset_size=5, seed=7) == pytest.approx(expected, rel=1e-12)
    same, other = rng.randn(400, 4), rng.randn(400, 4)
    assert abs(metrics.kernel_distance(same, other, subset_size=400)) < 0.05  # one law: ~0
    assert metrics.kernel_distance(same, other + 1.0, subset_size=400) > 0.5  # shifted: clearly positive


def test_train_distance_ratio_tells_replay_from_new_images():
    rng = np.random.RandomState(0)
    train, test = rng.rand(300, 4, 4, 1), rng.rand(100, 4, 4, 1)
    # new draws of the same distribution sit as far from the train set as the test images
    assert metrics.train_distance_ratio(rng.rand(100, 4, 4, 1), test, train) == pytest.approx(1.0, abs=0.15)
    # copies of training images are at distance 0 of it; slightly jittered copies near it
    assert metrics.train_distance_ratio(train[:100], test, train) == 0.0
    assert metrics.train_distance_ratio(train[:100] + 0.01, test, train) < 0.1
    # by hand: 1-D points, nearest distances [0.5, 1.5] (median 1.0) over [2.0, 2.0]
    assert metrics.train_distance_ratio(np.array([[0.5], [4.5]]), np.array([[-2.0], [5.0]]), np.array([[0.0], [3.0]])) == 0.5
