"""synthetic.py: the built-in EM-like set is seeded, has mitochondria as its labelled class at
5-15% foreground, cannot be solved by one global threshold (IoU_F < 0.5), and its two domains differ."""
import numpy as np
import pytest

import synthetic


def test_best_threshold_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 20, 20), dtype=np.uint8)
    masks = ((images < 90) ^ (rng.random(images.shape) < 0.1)).astype(np.uint8)
    brute = 0.0
    for t in range(256):
        for predicted in (images <= t, images >= t):
            tp = (predicted & (masks == 1)).sum()
            brute = max(brute, tp / (predicted | (masks == 1)).sum())
    assert synthetic.best_threshold_iou(images, masks) == pytest.approx(brute)


@pytest.fixture(scope="module")
def domains():
    return {d: synthetic.synthetic_em(3, 256, 256, seed=0, domain=d) for d in ("a", "b")}


def test_synthetic_em_shapes_and_foreground(domains):
    for images, masks in domains.values():
        assert images.shape == masks.shape == (3, 256, 256)
        assert images.dtype == masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
        fraction = masks.mean(axis=(1, 2))
        assert np.all((fraction >= 0.04) & (fraction <= 0.20)), fraction


def test_synthetic_em_not_solvable_by_threshold(domains):
    for images, masks in domains.values():
        assert synthetic.best_threshold_iou(images, masks) < 0.5
        # mitochondria are darker than average, so the dark polarity is the one that nearly works
        assert images[masks == 1].mean() < images[masks == 0].mean()


def test_synthetic_em_reproducible(domains):
    images, masks = synthetic.synthetic_em(2, 256, 256, seed=0, domain="a")
    np.testing.assert_array_equal(images, domains["a"][0][:2])  # a prefix of the longer set
    np.testing.assert_array_equal(masks, domains["a"][1][:2])
    other, _ = synthetic.synthetic_em(1, 256, 256, seed=1, domain="a")
    assert np.abs(other[0].astype(int) - images[0]).mean() > 10


def test_synthetic_domains_differ(domains):
    def stats(images):
        x = images.astype(np.float64)
        fine = np.abs(np.diff(x, axis=-1)).mean()               # pixel-to-pixel roughness
        return x.mean(), x.std(), fine / x.std()
    a, b = stats(domains["a"][0]), stats(domains["b"][0])
    assert abs(a[0] - b[0]) > 10                                # brightness
    assert a[1] > 1.1 * b[1]                                    # contrast
    assert b[2] > 1.2 * a[2]                                    # noise relative to structure


def test_the_demo_set_written_as_a_folder_loads_as_the_demo_generates_it(tmp_path):
    import presets
    import train

    root = synthetic.write_dataset(str(tmp_path / "demo"), 3, 2, 64, synthetic.TRAIN_SEED,
                                   test_seed=synthetic.TRAIN_SEED + 1)
    built_in = train.load_slices(presets.make_config("unet", train_images=3, test_images=2, image_side=64))[1]
    from_disk = train.load_slices(presets.make_config("unet", preset="demo", data=root))[1]
    for split in ("train", "test"):
        for a, b in zip(built_in[split], from_disk[split]):
            np.testing.assert_array_equal(a, b)
