"""Shifts of known strength for the benchmarks: each does what its name says, harder with strength."""

import numpy as np
import pytest

from monitoring.shifts import (
    HARD_CLASSES,
    SHIFT_FAMILIES,
    SHIFTS,
    darker,
    hard_class_mix,
    occluded,
    partly_inverted,
)


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (200, 28, 28)).astype(np.uint8), np.arange(200) % 10


def test_every_case_keeps_shape_type_and_batch_size(batch):
    images, labels = batch
    for family in SHIFT_FAMILIES.values():
        assert len(family.strengths) >= 2
        for name, shift in family.cases().items():
            out, out_labels = shift(images, labels)
            assert (
                out.shape == images.shape and out.dtype == np.uint8 and len(out_labels) == len(labels)
            ), name


def test_fixed_shifts_are_the_families_at_one_strength(batch):
    images, labels = batch
    assert np.array_equal(SHIFTS["darker (x0.7)"](images, labels)[0], darker(0.7)(images, labels)[0])
    assert np.array_equal(SHIFTS["inverted"](images, labels)[0], 255 - images)


def test_strength_means_what_it_says(batch):
    images, labels = batch
    assert darker(0.5)(images, labels)[0].mean() < darker(0.7)(images, labels)[0].mean()
    inverted = partly_inverted(0.2)(images, labels)[0]
    assert np.array_equal(inverted[:40], 255 - images[:40]) and np.array_equal(inverted[40:], images[40:])
    covered = occluded(12)(np.full_like(images, 255), labels)[0]
    assert np.all((covered == 0).sum(axis=(1, 2)) == 144)
    mixed_images, mixed_labels = hard_class_mix(0.9)(images, labels)
    assert np.isin(mixed_labels, HARD_CLASSES).mean() == pytest.approx(0.9)
    label_of = {image.tobytes(): label for image, label in zip(images, labels, strict=True)}
    assert [
        label_of[image.tobytes()] for image in mixed_images
    ] == mixed_labels.tolist()  # labels travel along
