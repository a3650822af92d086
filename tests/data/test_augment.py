"""Standard augmentation on uint8 tensors: in range, actually changing images, reproducible."""

import torch

from cxraug.core.config import AugmentParams
from cxraug.data.augment import augmented_copies, random_transform

NONE = AugmentParams(rotation_deg=0, translate=0, scale=0, brightness=0, contrast=0, hflip_probability=0)


def images(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_all_ranges_zero_is_the_identity():
    x = images()
    torch.testing.assert_close(random_transform(x, NONE, gen(0)), x)


def test_default_transforms_change_every_image_and_stay_uint8():
    x = images(32)
    y = random_transform(x, AugmentParams(), gen(0))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    changed = (y.float() - x.float()).abs().mean(dim=(1, 2))
    assert bool((changed > 1).all())


def test_brightness_saturates_instead_of_wrapping():
    bright = torch.full((64, 16, 16), 250, dtype=torch.uint8)
    y = random_transform(bright, NONE.model_copy(update={"brightness": 0.5}), gen(1))
    assert int(y.min()) >= 250 - 0.5 * 255 - 1  # a darkened image is still a bright one, not wrapped
    assert int(y.max()) == 255 and (y == 255).any()


def test_deterministic_given_the_generator():
    x = images()
    torch.testing.assert_close(
        random_transform(x, AugmentParams(), gen(5)), random_transform(x, AugmentParams(), gen(5))
    )
    assert not torch.equal(
        random_transform(x, AugmentParams(), gen(5)), random_transform(x, AugmentParams(), gen(6))
    )


def test_flip_is_off_by_default_and_exact_when_on():
    assert AugmentParams().hflip_probability == 0
    x = images()
    flipped = random_transform(x, NONE.model_copy(update={"hflip_probability": 1.0}), gen(0))
    torch.testing.assert_close(flipped, x.flip(-1))


def test_geometry_moves_pixels():
    """A bright square off centre: rotation/shift/zoom move its centre of mass, photometric ranges are off."""
    x = torch.zeros(32, 32, 32, dtype=torch.uint8)
    x[:, 6:14, 6:14] = 255
    geometric = NONE.model_copy(update={"rotation_deg": 30, "translate": 0.1, "scale": 0.2})
    y = random_transform(x, geometric, gen(2)).float()
    grid = torch.arange(32.0)
    centre_row = (y.sum(2) * grid).sum(1) / y.sum((1, 2))
    assert centre_row.std() > 0.5  # differently moved in different images


def test_augmented_copies_are_n_per_class_made_from_that_class():
    # class c images are constant c * 60: any geometric transform (border padding) keeps that value
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    x = (labels * 60).to(torch.uint8)[:, None, None].expand(-1, 16, 16).contiguous()
    geometric = NONE.model_copy(update={"rotation_deg": 20, "translate": 0.1, "scale": 0.2})
    extra, extra_labels = augmented_copies(x, labels, 7, geometric, gen(0), n_classes=3, batch_size=5)
    assert torch.bincount(extra_labels).tolist() == [7, 7, 7]
    assert torch.equal(extra, (extra_labels * 60).to(torch.uint8)[:, None, None].expand(-1, 16, 16))
    again, _ = augmented_copies(x, labels, 7, geometric, gen(0), n_classes=3, batch_size=5)
    assert torch.equal(extra, again)
