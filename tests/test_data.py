import numpy as np
import pytest

from train import data


def test_mnist5k_is_the_offline_default_with_a_fixed_split():
    d = data.load("mnist5k")
    assert d.image_shape == (28, 28, 1) and d.num_classes == 10
    assert len(d.train_images) == 4500 and len(d.test_images) == 500
    assert d.train_images.dtype == np.float32 and 0.0 <= d.train_images.min() and d.train_images.max() <= 1.0
    assert set(np.unique(d.test_labels)) == set(range(10))
    again = data.load("mnist5k")
    np.testing.assert_array_equal(d.test_labels, again.test_labels)


def test_digits_are_8x8_in_unit_range():
    d = data.load("digits")
    assert d.image_shape == (8, 8, 1)
    assert len(d.train_images) + len(d.test_images) == 1797
    assert d.train_images.max() == 1.0 and d.train_images.min() == 0.0


def test_image_size_resizes():
    d = data.load("digits", image_size=16)
    assert d.image_shape == (16, 16, 1)


def test_hosted_dataset_offline_fails_fast_naming_the_offline_sets(monkeypatch):
    monkeypatch.setattr(data, "_online", lambda timeout=3.0: False)
    with pytest.raises(data.DatasetError, match="--dataset=mnist5k or --dataset=digits"):
        data.load("mnist")


def test_pipeline_batches_with_labels_and_drops_the_remainder():
    images = np.random.rand(10, 8, 8, 1).astype(np.float32)
    labels = np.arange(10, dtype=np.int32)
    batches = list(data.pipeline(images, labels, 4, seed=0))
    assert len(batches) == 2 and batches[0][0].shape == (4, 8, 8, 1) and batches[0][1].shape == (4,)
    seen = np.concatenate([b[1].numpy() for b in batches])
    assert len(set(seen)) == 8


def test_training_pipeline_resumes_at_any_step_across_passes():
    """Batches s.. of a pipeline started at step s are those of one started at 0;
    every pass is a permutation of the data (7 batches of 10 from 75 images)."""
    images = np.arange(75, dtype=np.float32).reshape(75, 1, 1, 1)
    labels = np.arange(75)

    def batches(start, end, seed=3):
        ds = data.training_pipeline(images, labels, 10, seed=seed, start_step=start, end_step=end)
        return [y.numpy() for _, y in ds]

    whole = batches(0, 30)  # a little over four passes
    assert all(len(b) == 10 for b in whole)
    for p in range(4):
        seen = np.concatenate(whole[7 * p : 7 * p + 7])
        assert len(set(seen)) == 70  # no image twice within a pass
    assert not np.array_equal(whole[0], whole[7])  # each pass has its own order
    for start in (5, 7, 13, 22):
        tail = batches(start, 30)
        assert len(tail) == 30 - start
        for a, b in zip(whole[start:], tail):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batches(0, 1, seed=4)[0], whole[0])  # the seed sets the order
