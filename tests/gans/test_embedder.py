"""The metric-learning embedder: its loss, its retrieval metrics, and that training separates classes."""

import pytest
import torch
import torch.nn.functional as F

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import Precision, atomic_save
from cxraug.core.training import adam, epoch_batches
from cxraug.gans.opengan.embedder import (
    Embedder,
    augment,
    embed,
    embedder_step,
    load_embedder,
    retrieval,
    save_embedder,
    supervised_contrastive_loss,
)


def shapes(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy 3-class set: a bright square, horizontal stripes, or a ring, at jittered positions, on
    noise. Classes differ in shape, not in mean brightness."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            cx, cy = (torch.randint(size // 4, 3 * size // 4, (2,), generator=g)).tolist()
            if label == 0:
                shape = ((x - cx).abs() < size // 6) & ((y - cy).abs() < size // 6)
            elif label == 1:
                shape = (y // 3) % 2 == 0
            else:
                r = ((x - cx) ** 2 + (y - cy) ** 2).float().sqrt()
                shape = (r > size / 8) & (r < size / 5)
            img = 60 + 120 * shape.float() + 25 * torch.randn(size, size, generator=g)
            images.append(img.clamp(0, 255).to(torch.uint8))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_supervised_contrastive_loss_rewards_class_clusters_and_ignores_lonely_anchors():
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has a single sample: no positive, no contribution
    centres = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    clustered = F.normalize(centres[labels] + 0.05 * torch.randn(5, 16), dim=1)
    mixed = clustered[torch.tensor([0, 2, 1, 3, 4])]  # same points, classes interleaved
    assert supervised_contrastive_loss(clustered, labels, 0.1) < supervised_contrastive_loss(
        mixed, labels, 0.1
    )
    assert torch.isfinite(supervised_contrastive_loss(clustered, labels, 0.1))
    # the loss needs only the positives that exist: a lonely anchor does not change it
    without_lonely = supervised_contrastive_loss(clustered[:4], labels[:4], 0.1)
    assert without_lonely < supervised_contrastive_loss(mixed[:4], labels[:4], 0.1)


def test_retrieval_metrics_on_known_neighbours():
    train = torch.eye(3)  # one train image per class, along the axes
    train_labels = torch.tensor([0, 1, 2])
    queries = F.normalize(torch.tensor([[1.0, 0.1, 0], [0.9, 1.0, 0], [1.0, 0, 0.2], [0, 0, 1.0]]), dim=1)
    query_labels = torch.tensor([0, 1, 2, 2])  # nearest: 0, 1, 0, 2 -> 3 of 4 right
    r = retrieval(train, train_labels, queries, query_labels, k=1, classes=("a", "b", "c"))
    assert r.recall_at_1 == r.knn_accuracy == pytest.approx(0.75)
    assert r.per_class_recall == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert r.knn_balanced_accuracy == pytest.approx(2.5 / 3)
    assert r.majority_rate == pytest.approx(0.5)


def test_augmented_views_differ_but_keep_the_image():
    images, _ = shapes(4)
    x = images.unsqueeze(1).float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    a, b = augment(x, g), augment(x, g)
    assert a.shape == x.shape and a.abs().max() <= 1
    assert not torch.allclose(a, b)
    assert F.cosine_similarity(a.flatten(1), x.flatten(1)).mean() > 0.5


def test_training_separates_classes_far_above_chance():
    torch.manual_seed(0)
    images, labels = shapes(40)
    val_images, val_labels = shapes(20, seed=1)
    device, precision = torch.device("cpu"), Precision(torch.device("cpu"), bf16=False, channels_last=False)
    model = Embedder(32, embed_dim=16, d_base=8)
    before = retrieval(embed(model, images), labels, embed(model, val_images), val_labels, 5, ("a", "b", "c"))
    optimizer = adam(model.parameters(), device, 3e-3, weight_decay=1e-4, decoupled=True)
    g = torch.Generator().manual_seed(0)
    for epoch in range(8):
        for idx in epoch_batches(labels, 30, 4, balanced=True, seed=0, epoch=epoch):
            embedder_step(model, optimizer, images[idx], labels[idx], 0.1, True, g, precision)
    after = retrieval(embed(model, images), labels, embed(model, val_images), val_labels, 5, ("a", "b", "c"))
    assert after.knn_accuracy > 0.9 > before.knn_accuracy  # chance is 1/3
    assert after.recall_at_1 > 0.9
    out = embed(model, val_images)
    assert torch.allclose(out.norm(dim=1), torch.ones(len(out)), atol=1e-5)


def test_epoch_batches_are_reproducible_and_balanced():
    labels = torch.tensor([0] * 90 + [1] * 10)
    first = epoch_batches(labels, 20, 10, balanced=True, seed=3, epoch=2)
    assert all(
        torch.equal(a, b) for a, b in zip(first, epoch_batches(labels, 20, 10, True, 3, 2), strict=True)
    )
    assert not torch.equal(first[0], epoch_batches(labels, 20, 10, True, 3, 3)[0])
    share_rare = (labels[torch.cat(first)] == 1).float().mean()
    assert 0.35 < share_rare < 0.65  # 10% of the images, half of the draws
    plain = torch.cat(epoch_batches(labels, 20, 5, balanced=False, seed=0, epoch=0))
    assert sorted(plain.tolist()) == list(range(100))  # one pass, each image once


def test_saved_embedder_loads_frozen_in_eval_mode_and_embeds_the_same(tmp_path):
    model = Embedder(32, embed_dim=16, d_base=8).eval()
    save_embedder(model, tmp_path / "e.pt", ("a", "b"), ["a"])
    loaded = load_embedder(tmp_path / "e.pt", "cpu")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded(x), model(x))
    atomic_save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(CxraugError, match="not an embedder"):
        load_embedder(tmp_path / "other.pt", "cpu")
    with pytest.raises(CxraugError, match="not found"):
        load_embedder(tmp_path / "missing.pt", "cpu")
