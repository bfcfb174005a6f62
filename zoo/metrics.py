"""Evaluation maths on feature arrays (numpy): Frechet distance, k-NN precision
and recall, density and coverage, the linear probe, and code statistics. No models or data here:
train/evaluate.py supplies the features."""

import numpy as np
from scipy import linalg


def gaussian_stats(features):
    """(mean, covariance) of the rows of `features`."""
    features = np.asarray(features, np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)): the Frechet (2-Wasserstein)
    distance between N(mu1, C1) and N(mu2, C2) (FID's formula, Heusel et al. 2017)."""
    diff = np.asarray(mu1) - np.asarray(mu2)
    covmean = linalg.sqrtm(np.asarray(cov1) @ np.asarray(cov2))
    if not np.isfinite(covmean).all():  # singular product: nudge both, as FID does
        eps = 1e-6 * np.eye(len(diff))
        covmean = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def frechet_feature_distance(real, fake):
    """Frechet distance between Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def kernel_distance(real, fake, subsets=100, subset_size=1000, seed=0):
    """KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 between the
    two feature sets with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,

        MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
                  - 2/m^2 sum_{i,j} k(x_i, y_j),

    averaged over `subsets` draws of m = min(subset_size, N, M) rows of each
    (without replacement within a draw). Unbiased, so unlike FID it does not
    fall as the sample grows and is near 0 (possibly below) for one law."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d = real.shape[1]
    m = min(subset_size, len(real), len(fake))
    if m == len(real) == len(fake):
        subsets = 1  # every draw would hold all the rows: one estimate
    rng = np.random.RandomState(seed)
    estimates = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = m * (m - 1)
        estimates.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean())
    return float(np.mean(estimates))


def _pairwise_sq(a, b):
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _knn_radii(features, k):
    d = _pairwise_sq(features, features)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real, fake, k=3):
    """Kynkaanniemi et al. 2019: precision = share of fakes inside the k-NN
    manifold of the reals (union of balls to each real's k-th neighbour); recall
    = share of reals inside the k-NN manifold of the fakes."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    real_r, fake_r = _knn_radii(real, k), _knn_radii(fake, k)
    d = _pairwise_sq(fake, real)  # [fake, real]
    precision = float((d <= real_r[None, :]).any(axis=1).mean())
    recall = float((d.T <= fake_r[None, :]).any(axis=1).mean())
    return precision, recall


def density_coverage(real, fake, k=5):
    """Naeem et al. 2020, with B_i the ball around real X_i of radius its k-NN distance:

        density  = 1 / (k M) sum_j sum_i 1[Y_j in B_i]   (~1 when fakes follow the reals)
        coverage = 1 / N sum_i 1[some Y_j in B_i]        (-> 1 - 2^-k for M = N, same law)

    over N reals X and M fakes Y. Density rewards fakes in dense real regions
    and, unlike precision, is not fooled by real outliers; coverage falls when
    modes are dropped."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    inside = _pairwise_sq(fake, real) <= _knn_radii(real, k)[None, :]  # [fake, real]
    density = float(inside.sum() / (k * len(fake)))
    coverage = float(inside.any(axis=0).mean())
    return density, coverage


def class_histogram(predicted, num_classes):
    """Share of each predicted class and its entropy in nats (log K when uniform)."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=num_classes).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    return p.tolist(), float(-(nz * np.log(nz)).sum())


def _nearest_distance(a, b, batch=500):
    """Euclidean distance of each row of a [N, D] to its nearest row of b [M, D]."""
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    b_sq = (b**2).sum(1)
    out = []
    for i in range(0, len(a), batch):
        rows = np.asarray(a[i : i + batch], np.float64).reshape(len(a[i : i + batch]), -1)
        sq = (rows**2).sum(1)[:, None] + b_sq[None] - 2.0 * rows @ b.T
        out.append(np.sqrt(np.maximum(sq.min(1), 0.0)))
    return np.concatenate(out)


def train_distance_ratio(samples, test, train):
    """A replay check: the median pixel distance of generated samples to their
    nearest training image, over the same median for held-out test images,

        median_i min_j ||g_i - x_j|| / median_i min_j ||t_i - x_j||.

    About 1 for a model that generalises (its samples are as far from the
    training set as new real images are); near 0 for one that replays its
    training images, since a copy's nearest training image is itself.

    Args:
      samples: generated images [N, ...].
      test: held-out real images [M, ...].
      train: the training images [T, ...].

    Returns:
      The ratio, a float."""
    return float(np.median(_nearest_distance(samples, train)) / np.median(_nearest_distance(test, train)))


def best_permutation_accuracy(codes, labels):
    """Agreement of an unsupervised categorical code with the true classes:
    the accuracy of the best one-to-one map from code values to classes,

        max over matchings m of (1/N) sum_i [m(code_i) = label_i],

    found by the Hungarian algorithm on the code x class count matrix (as
    clustering accuracy is scored; InfoGAN's categorical code on MNIST,
    Chen et al. 2016, section 7.1). Codes and classes may differ in number:
    the unmatched ones count as errors.

    Args:
      codes: the code value of each example, ints [N].
      labels: its class, ints [N].

    Returns:
      The accuracy in [0, 1]."""
    from scipy.optimize import linear_sum_assignment

    codes, labels = np.asarray(codes, np.int64), np.asarray(labels, np.int64)
    counts = np.zeros((codes.max() + 1, labels.max() + 1))
    np.add.at(counts, (codes, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(codes))


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels, seed=0):
    """Test accuracy of a logistic regression fitted on standardised train codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(np.asarray(train_codes), np.asarray(train_labels))
    return float(probe.score(np.asarray(test_codes), np.asarray(test_labels)))


def code_statistics(codes):
    """How far codes are from N(0, I): |mean| max, mean variance, mean |off-diagonal covariance|."""
    mean, cov = gaussian_stats(codes)
    off = cov - np.diag(np.diag(cov))
    n = len(mean)
    return {
        "code_mean_abs_max": float(np.abs(mean).max()),
        "code_var_mean": float(np.diag(cov).mean()),
        "code_cov_offdiag_abs_mean": float(np.abs(off).sum() / max(n * (n - 1), 1)),
    }


ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al.'s threshold


def active_units(posterior_means, threshold=ACTIVE_UNIT_VARIANCE):
    """The number of active latent units (Burda et al. 2016):
    dimensions j with Var_x(E_q[z_j | x]) > threshold, the variance of the
    posterior mean across the images x [N] (the rows of posterior_means
    [N, J]). An inactive unit's posterior is the same for every image: the
    decoder cannot read anything about x from it."""
    means = np.asarray(posterior_means, np.float64)
    return int((means.var(axis=0) > threshold).sum())
