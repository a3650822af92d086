"""Fidelity with a scale (metrics/reference.py): the real-vs-real floor, equal set sizes, degenerate spaces,
class separability and the class-blind verdict; the patient-aware memorisation yardstick; the random
feature space that never saw an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxraug.metrics import fidelity, memorisation, reference
from cxraug.nets.random_features import RandomConvFeatures

SETTINGS = {"kid_subsets": 20, "kid_subset_size": 100, "pr_neighbourhood": 3, "min_images": 10}


def blobs(n: int, seed: int, dim: int = 8, shift: float = 0.0) -> torch.Tensor:
    """Gaussian features [n, dim]; `shift` moves the mean along every axis (another "class")."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) + shift


def fd(a: torch.Tensor, b: torch.Tensor) -> float:
    return fidelity.fidelity_scores(a, b, seed=0, **SETTINGS)[0]["fd"]


# ----------------------------------------------------------------------------------------------- floor


def test_floor_is_about_zero_for_two_halves_of_one_shuffled_real_set_and_large_for_two_classes():
    real = torch.cat([blobs(400, 0), blobs(400, 1, shift=1.0)])  # two classes of real features
    labels = torch.arange(2).repeat_interleave(400)
    order = torch.randperm(800, generator=torch.Generator().manual_seed(2))
    train, val = order[:400], order[400:]  # two halves of one shuffled real set
    features = {"f": {"synthetic": blobs(200, 9, shift=5.0), "train": real[train], "val": real[val]}}
    sets = {"synthetic": torch.arange(2).repeat(100), "train": labels[train], "val": labels[val]}
    table, _ = reference.reference_table(
        features, sets, ("a", "b"), draws=3, degenerate_spread=1e-4, seed=0, **SETTINGS
    )
    floor = table["overall"]["real_vs_real"]
    between_classes = fd(real[:400], real[400:])  # class a vs class b: 8 axes x 1^2 = 8 in theory
    assert between_classes > 7 and floor["fd_f"] < 0.1 * between_classes
    assert abs(floor["kid_f"]) < 0.02 and floor["precision_f"] > 0.8 and floor["recall_f"] > 0.8
    for c in ("a", "b"):  # per class too: about zero
        assert table["per_class"][c]["real_vs_real"]["fd_f"] < 0.1 * between_classes
    assert table["overall"]["generated_vs_real"]["fd_f"] > 10 * floor["fd_f"]  # the shifted "generator"

    # the floor is computed on real images only: another generator leaves it unchanged, to the bit
    features["f"]["synthetic"] = blobs(200, 10)
    again, _ = reference.reference_table(
        features, sets, ("a", "b"), draws=3, degenerate_spread=1e-4, seed=0, **SETTINGS
    )
    assert again["overall"]["real_vs_real"] == floor
    assert again["per_class"]["a"]["real_vs_real"] == table["per_class"]["a"]["real_vs_real"]


# ------------------------------------------------------------------------------------------ equal sizes


def test_equal_size_comparison_equals_the_direct_figure_when_sizes_match():
    a, b = blobs(60, 0), blobs(60, 1, shift=0.3)
    labels = torch.zeros(60, dtype=torch.int64)
    mean, sd, skipped = reference.compare(a, labels, b, labels, {0: 60}, draws=7, seed=0, **SETTINGS)
    direct, _ = fidelity.fidelity_scores(a, b, seed=0, **SETTINGS)
    assert not skipped and mean == {k: v for k, v in direct.items() if k != "kid_subset_size"}
    assert all(v == 0.0 for v in sd.values())


def test_unequal_sizes_are_subsampled_to_the_smaller_side_and_averaged_over_draws():
    a, b = blobs(300, 0), blobs(50, 1)
    la, lb = torch.zeros(300, dtype=torch.int64), torch.zeros(50, dtype=torch.int64)
    mean, sd, _ = reference.compare(a, la, b, lb, {0: 50}, draws=8, seed=0, **SETTINGS)
    by_hand = []
    for d in range(8):  # the documented draws: generator (seed, d, 0) for the candidate side
        i = reference.draw(la, {0: 50}, np.random.default_rng([0, d, 0]))
        assert len(i) == 50 and len(set(i.tolist())) == 50
        by_hand.append(fd(a[i], b))
    assert mean["fd"] == pytest.approx(np.mean(by_hand)) and sd["fd"] == pytest.approx(np.std(by_hand))
    assert sd["fd"] > 0  # the draws differ, and the spread says by how much
    # FD at 50 vs 50 is biased upward against the 300 vs 50 figure: why sizes must match
    assert mean["fd"] > fd(a, b)


def test_matched_counts_keep_the_references_class_mix_at_what_every_side_can_give():
    synthetic = torch.tensor([0] * 30 + [1] * 30 + [2] * 30)
    train = torch.tensor([0] * 500 + [1] * 200 + [2] * 40)
    val = torch.tensor([0] * 100 + [1] * 45 + [2] * 5)
    # val's mix 100:45:5; synthetic class 0 has 30 of the 100 needed -> x 0.3: 30, 13, 1
    assert reference.matched_counts([synthetic, train, val], [0, 1, 2]) == {0: 30, 1: 13, 2: 1}
    assert reference.matched_counts([synthetic, train, val], [2]) == {2: 5}  # one class: its smallest side
    assert reference.matched_counts([synthetic, train, val[:100]], [0, 1, 2]) == {0: 30}  # missing classes


# ------------------------------------------------------------------------------------- sanity checks


def test_a_space_whose_real_features_do_not_spread_is_degenerate_and_gets_no_figure():
    point = torch.nn.functional.normalize(torch.ones(1, 8, dtype=torch.float64), dim=1)
    collapsed = point + 1e-4 * blobs(100, 0)  # every image at about one unit vector: FD ~1e-7, "perfect"
    labels = torch.zeros(100, dtype=torch.int64)
    features = {
        "collapsed": {"synthetic": collapsed[:50] * 0.99, "train": collapsed[:50], "val": collapsed[50:]},
        "fine": {"synthetic": blobs(50, 1), "train": blobs(50, 2), "val": blobs(50, 3)},
    }
    sets = {"synthetic": labels[:50], "train": labels[:50], "val": labels[50:]}
    table, _ = reference.reference_table(
        features, sets, ("a",), draws=1, degenerate_spread=1e-4, seed=0, **SETTINGS
    )
    assert table["spaces"]["collapsed"]["degenerate"] and not table["spaces"]["fine"]["degenerate"]
    assert table["spaces"]["collapsed"]["real_spread"] < 1e-6 < 0.5 < table["spaces"]["fine"]["real_spread"]
    for side in ("generated_vs_real", "real_vs_real"):
        keys = set(table["overall"][side])
        assert "fd_fine" in keys and not any("collapsed" in k for k in keys)
    assert reference.relative_spread(torch.zeros(10, 4)) == 0.0  # dead features: degenerate too


def test_separability_finds_class_structure_and_not_shuffled_labels():
    x = torch.cat([blobs(60, 0), blobs(60, 1, shift=1.5), blobs(60, 2, shift=-1.5)])
    y = torch.arange(3).repeat_interleave(60)
    assert reference.separability(x, y)["separable"]
    rejections = sum(
        reference.separability(x, y[torch.randperm(180, generator=torch.Generator().manual_seed(s))])[
            "separable"
        ]
        for s in range(40)
    )
    assert rejections <= 3  # alpha 0.01, conservative: 40 class-blind sets, at most a few false alarms
    assert reference.separability(x[:8], y[:8]) is None  # one class only


def test_class_blind_needs_cas_at_chance_or_an_independent_space_where_only_the_real_images_separate():
    def space(real: bool, synthetic: bool) -> dict:
        s = {"separable": synthetic, "accuracy": 0.2 + 0.5 * synthetic, "chance": 0.2}
        return {
            "degenerate": False,
            "separability": {"real": {**s, "separable": real, "accuracy": 0.8}, "synthetic": s},
        }

    good_cas = {"macro_auc": 0.8, "macro_auc_ci": [0.7, 0.9]}
    assert reference.class_blind(good_cas, {"random": space(True, True)}, 0.55) == []
    assert reference.class_blind({"macro_auc": 0.51, "macro_auc_ci": [0.45, 0.58]}, {}, 0.55)[0].startswith(
        "CAS"
    )
    assert reference.class_blind({"macro_auc": 0.6, "macro_auc_ci": [0.49, 0.7]}, {}, 0.55)  # CI reaches 0.5
    # a CI wholly below 0.5 is not chance: the synthetic labels point the wrong way, and it says so
    below = reference.class_blind({"macro_auc": 0.40, "macro_auc_ci": [0.30, 0.47]}, {}, 0.55)[0]
    assert "below chance" in below and "at chance" not in below
    assert "random space" in reference.class_blind(good_cas, {"random": space(True, False)}, 0.55)[0]
    assert reference.class_blind(good_cas, {"random": space(False, False)}, 0.55) == []  # real not separable
    assert reference.class_blind(good_cas, {"embedder": space(True, False)}, 0.55) == []  # not independent


# ------------------------------------------------------------------------------------- memorisation


def test_the_audit_never_matches_a_real_image_with_a_film_of_the_same_patient():
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (40, 16, 16), generator=g, dtype=torch.uint8)
    follow_up = (base.int() + torch.randint(-2, 3, base.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    real = torch.cat([base, follow_up])  # two near-identical films of each of 40 patients
    patients = torch.arange(40).repeat(2)
    labels = torch.arange(2).repeat(40)
    synthetic = torch.cat([base[:5], torch.randint(0, 256, (10, 16, 16), generator=g, dtype=torch.uint8)])
    audit = memorisation.audit(synthetic, real, labels, patients, copy_threshold=0.5)
    assert (patients[audit.real_nn_index] != patients).all()  # never the patient's own films
    brute = torch.cdist(memorisation.pixels(real).double(), memorisation.pixels(real).double()) / 16
    brute[patients[:, None] == patients[None, :]] = float("inf")
    assert np.allclose(audit.real_nn_distance, brute.min(1).values.numpy())
    # the yardstick is other patients' distance, not the follow-up's ~0.005: copies are still found
    assert audit.reference > 0.2 and audit.copies[:5].all() and not audit.copies[5:].any()
    summary = audit.summary(np.zeros(15, dtype=int), ("a", "b"))
    assert summary["per_class"]["a"]["real_nn_median"] == pytest.approx(
        float(np.median(audit.real_nn_distance[::2])), abs=1e-6
    )
    with pytest.raises(ValueError, match="outside its own group"):
        memorisation.nearest(real[:3], real[:3], groups=(torch.zeros(3), torch.zeros(3)))


# ------------------------------------------------------------------------------------------ the space


def test_the_random_feature_space_is_a_function_of_its_seed_and_never_saw_an_image():
    a, b, other = RandomConvFeatures(0), RandomConvFeatures(0), RandomConvFeatures(1)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.state_dict()["body.0.weight"], other.state_dict()["body.0.weight"])
    # nothing in it can learn or adapt: no trainable parameter, no normalisation statistics
    assert not any(p.requires_grad for p in a.parameters()) and not list(a.buffers())

    from cxraug.stages import gan_metrics  # noqa: F401  (defines the "random" space)

    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 64, 64), generator=g, dtype=torch.uint8)
    generated = torch.randint(0, 256, (20, 64, 64), generator=g, dtype=torch.uint8)
    before = fidelity.extract_features(real, "random", "0", batch_size=8)
    fidelity.extract_features(generated, "random", "0", batch_size=8)  # generated images pass through ...
    after = fidelity.extract_features(real, "random", "0", batch_size=8)
    assert torch.equal(before, after)  # ... and change nothing: the real features are the same
    direct = a(real[:, None].float().div(127.5).sub(1.0)).double()
    assert torch.allclose(before, direct) and before.shape == (20, 256)
    assert reference.relative_spread(before) > 1e-3  # random features of varied images do spread
