"""Memorisation audit: how close is each synthetic image to its nearest REAL TRAINING image?

Two spaces: pixels (uint8 -> [0, 1]; distance reported as RMSE = L2 / sqrt(pixels), so it does not grow
with the image size) and features (a frozen net's features, L2-normalised, so the distance is
sqrt(2 - 2 cos)). Nearest neighbours come from one matmul per chunk, |q|^2 + |r|^2 - 2 q.r, over chunks of
queries AND of references (memory stays bounded on the full NIH set); the winner's distance is then
recomputed directly, so an exact copy comes out at 0 rather than at float32 rounding noise.

The copy threshold is scale-free: a synthetic image is a near-copy when its nearest real training image
is closer than `copy_threshold` x the median distance between a real training image and its nearest real
training image OF ANOTHER PATIENT (in the same space). Real images of different patients are the yardstick
for "different images": a patient's own follow-up films are excluded from it (on the real NIH subset 38% of
the unrestricted nearest neighbours were the same patient, which shrank the yardstick). A synthetic image
has no patient, so its nearest real image is searched among all of them. 0.5 means twice as close as real
images of different patients typically are to each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

QUERY_CHUNK = 1024
REFERENCE_CHUNK = 8192


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, H*W] in [0, 1]."""
    return images.reshape(len(images), -1).float().div_(255.0)


def nearest(
    query: torch.Tensor,
    reference: torch.Tensor,
    *,
    to_vectors=lambda x: x.float(),
    exclude_self: bool = False,
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    query_chunk: int = QUERY_CHUNK,
    reference_chunk: int = REFERENCE_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query row, the index of its nearest reference row (L2) and that distance (float64).
    `to_vectors` maps a chunk of the stored rows (e.g. uint8 images) to float vectors on the fly, so the
    inputs can stay compact. `exclude_self`: query and reference are the same set; a row is not its own
    neighbour (its duplicates elsewhere in the set still are). `groups` (query groups, reference groups),
    e.g. patient ids as int64: a reference row of the query's own group is never its neighbour."""
    if len(reference) - (1 if exclude_self else 0) < 1:
        raise ValueError(f"no reference rows to search ({len(reference)})")
    only = torch.unique(groups[1]) if groups is not None else None
    if only is not None and len(only) <= 1 and bool((groups[0] == only).any() if len(only) else len(query)):
        raise ValueError("a query row has no reference row outside its own group")
    # full precision even inside a caller's bf16 autocast: |q|^2 + |r|^2 - 2 q.r cancels badly in bf16
    with torch.autocast(torch.device(device).type, enabled=False):
        return _nearest(
            query, reference, to_vectors, exclude_self, groups, device, query_chunk, reference_chunk
        )


def _nearest(query, reference, to_vectors, exclude_self, groups, device, query_chunk, reference_chunk):
    n_query, n_ref = len(query), len(reference)
    best_d2 = torch.zeros(n_query, dtype=torch.float64)
    best_i = torch.zeros(n_query, dtype=torch.int64)
    for q0 in range(0, n_query, query_chunk):
        q = to_vectors(query[q0 : q0 + query_chunk]).to(device)
        q_norm = (q * q).sum(1, keepdim=True)
        chunk_d2 = chunk_i = None
        for r0 in range(0, n_ref, reference_chunk):
            r = to_vectors(reference[r0 : r0 + reference_chunk]).to(device)
            d2 = q_norm + (r * r).sum(1) - 2.0 * q @ r.T  # [q, r]
            if exclude_self:
                rows = torch.arange(len(q), device=device)
                cols = rows + q0 - r0
                inside = (cols >= 0) & (cols < len(r))
                d2[rows[inside], cols[inside]] = float("inf")
            if groups is not None:
                same = groups[0][q0 : q0 + len(q), None] == groups[1][None, r0 : r0 + len(r)]
                d2[same.to(device)] = float("inf")
            value, index = d2.min(1)
            if chunk_d2 is None:
                chunk_d2, chunk_i = value, index + r0
            else:
                better = value < chunk_d2
                chunk_d2, chunk_i = (
                    torch.where(better, value, chunk_d2),
                    torch.where(better, index + r0, chunk_i),
                )
        best_i[q0 : q0 + len(q)] = chunk_i.cpu()
    # exact distance to the chosen neighbour (the expansion above cancels badly near zero)
    for q0 in range(0, n_query, query_chunk):
        idx = best_i[q0 : q0 + query_chunk]
        diff = to_vectors(query[q0 : q0 + query_chunk]).double() - to_vectors(reference[idx]).double()
        best_d2[q0 : q0 + len(idx)] = (diff * diff).sum(1)
    return best_i, best_d2.sqrt()


def nearest_pixels(
    query: torch.Tensor, reference: torch.Tensor, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference image of each uint8 query image [N, H, W] and the pixel RMSE to it on [0, 1]."""
    if query.shape[1:] != reference.shape[1:]:
        raise ValueError(f"image sizes differ: {tuple(query.shape[1:])} vs {tuple(reference.shape[1:])}")
    index, distance = nearest(query, reference, to_vectors=pixels, **kwargs)
    return index, distance / np.sqrt(query[0].numel() if len(query) else 1)


def nearest_features(
    query: torch.Tensor, reference: torch.Tensor, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference of each query feature row [N, F] after L2 normalisation: sqrt(2 - 2 cos)."""
    return nearest(F.normalize(query.double(), dim=1), F.normalize(reference.double(), dim=1), **kwargs)


def patient_codes(patient_ids) -> torch.Tensor:
    """Any array of patient ids (strings or numbers) as int64 codes, one per image."""
    return torch.from_numpy(
        np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)[1].astype(np.int64)
    )


@dataclass(frozen=True)
class SpaceAudit:
    """One space's audit: every synthetic image's nearest real training image and the distances; the
    yardstick is each real training image's nearest real training image of ANOTHER patient."""

    space: str  # "pixel" or the feature extractor's name
    unit: str
    nearest_index: np.ndarray  # [N_synthetic] index into the real training split
    distance: np.ndarray  # [N_synthetic]
    real_nn_distance: np.ndarray  # [N_real] each real image to its nearest real image of another patient
    real_nn_index: np.ndarray  # [N_real] that image
    real_labels: np.ndarray  # [N_real]
    copy_threshold: float  # the ratio

    @property
    def reference(self) -> float:
        """Median real-to-real (other patient) nearest-neighbour distance: the yardstick of the threshold."""
        return float(np.median(self.real_nn_distance))

    @property
    def threshold(self) -> float:
        return self.copy_threshold * self.reference

    @property
    def ratio(self) -> np.ndarray:
        return self.distance / self.reference if self.reference > 0 else np.full_like(self.distance, np.inf)

    @property
    def copies(self) -> np.ndarray:
        return self.distance < self.threshold

    def summary(self, labels: np.ndarray, classes: tuple[str, ...]) -> dict:
        """Overall and per class: near-copy count and share, the median distance of the class's synthetic
        images to their nearest real image and the class's own real yardstick median (context: a class
        whose real films are alike has a smaller one)."""
        d, copies = self.distance, self.copies
        per_class = {}
        for k, name in enumerate(classes):
            member, real_member = labels == k, self.real_labels == k
            if member.any():
                per_class[name] = {
                    "n": int(member.sum()),
                    "copies": int(copies[member].sum()),
                    "copy_fraction": round(float(copies[member].mean()), 6),
                    "distance_median": round(float(np.median(d[member])), 6),
                    "real_nn_median": round(float(np.median(self.real_nn_distance[real_member])), 6)
                    if real_member.any()
                    else None,
                }
        return {
            "space": self.space,
            "unit": self.unit,
            "yardstick": "nearest real training image of another patient",
            "real_nn_median": round(self.reference, 6),
            "threshold": round(self.threshold, 6),
            "n_synthetic": len(d),
            "copies": int(copies.sum()),
            "copy_fraction": round(float(copies.mean()), 6) if len(d) else None,
            "distance": _quantiles(d),
            "ratio": _quantiles(self.ratio),
            "real_nn_distance": _quantiles(self.real_nn_distance),
            "per_class": per_class,
        }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    q = np.quantile(x, [0.0, 0.01, 0.05, 0.5])
    return {name: round(float(v), 6) for name, v in zip(("min", "p1", "p5", "median"), q, strict=True)}


def audit(
    synthetic: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    real_patients: torch.Tensor,
    copy_threshold: float,
    space: str = "pixel",
    device: torch.device | str = "cpu",
) -> SpaceAudit:
    """The audit of synthetic rows against real training rows: uint8 images [N, H, W] when `space` is
    "pixel", else feature rows [N, F] of that space. `real_patients`: int64 codes (`patient_codes`)."""
    search, unit = (
        (nearest_pixels, "RMSE on [0, 1]") if space == "pixel" else (nearest_features, "L2 of unit features")
    )
    index, distance = search(synthetic, real, device=device)
    real_index, real_nn = search(real, real, groups=(real_patients, real_patients), device=device)
    return SpaceAudit(
        space,
        unit,
        index.numpy(),
        distance.numpy(),
        real_nn.numpy(),
        real_index.numpy(),
        np.asarray(real_labels),
        copy_threshold,
    )


class NearCopyFilter:
    """For synthesis: flags candidates whose nearest real training image (pixel RMSE) is closer than
    `copy_threshold` x the median real-to-real nearest-neighbour RMSE (computed once here; with
    `patients`, int64 codes, the audit's yardstick: the nearest real image of another patient)."""

    def __init__(
        self,
        real: torch.Tensor,
        copy_threshold: float,
        device: torch.device | str = "cpu",
        patients: torch.Tensor | None = None,
    ) -> None:
        if len(real) < 2:
            raise ValueError("the near-copy filter needs at least two real training images")
        self.real, self.device = real, device
        groups = None if patients is None else (patients, patients)
        _, real_nn = nearest_pixels(real, real, exclude_self=groups is None, groups=groups, device=device)
        self.reference = float(real_nn.median())
        self.copy_threshold = copy_threshold
        self.threshold = copy_threshold * self.reference

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """bool [n]: which uint8 images [n, H, W] are near-copies of a real training image."""
        if len(images) == 0:
            return torch.zeros(0, dtype=torch.bool)
        _, distance = nearest_pixels(images, self.real, device=self.device)
        return distance < self.threshold


# ------------------------------------------------------------------------------------------- figures


def distance_histograms(audits: list[SpaceAudit]):
    """Per space: distances of synthetic images to their nearest real training image, beside the real
    images' distances to their nearest real image of another patient, as ratios of the latter's median;
    threshold shown."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(audits), 3.2), layout="constrained")
    for ax, a in zip(fig.subplots(1, len(audits), squeeze=False)[0], audits, strict=True):
        real_ratio = a.real_nn_distance / a.reference if a.reference > 0 else a.real_nn_distance
        finite = np.concatenate([a.ratio[np.isfinite(a.ratio)], real_ratio])
        bins = np.linspace(0, max(2.0, float(np.quantile(finite, 0.99)) if len(finite) else 2.0), 50)
        ax.hist(
            real_ratio,
            bins=bins,
            color="0.6",
            alpha=0.8,
            density=True,
            label="real -> nearest real, other patient",
        )
        ax.hist(
            a.ratio, bins=bins, color="tab:orange", alpha=0.6, density=True, label="synthetic -> nearest real"
        )
        ax.axvline(a.copy_threshold, color="tab:red", linestyle="--", lw=1)
        ax.set_title(f"{a.space}: {a.copies.mean():.1%} below {a.copy_threshold:g} (near-copies)", fontsize=9)
        ax.set_xlabel(f"nearest-neighbour distance / {a.reference:.3g} (real median)", fontsize=8)
    fig.axes[0].set_ylabel("density")
    fig.axes[0].legend(fontsize=7)
    return fig


def closest_pairs(audit: SpaceAudit, synthetic: torch.Tensor, real: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 [2n, H, W]: the n synthetic images closest to a real training image, each followed by it."""
    order = np.argsort(audit.distance, kind="stable")[:n]
    pairs = [torch.stack([synthetic[i], real[audit.nearest_index[i]]]) for i in order]
    return torch.cat(pairs) if pairs else torch.zeros((0, *synthetic.shape[1:]), dtype=torch.uint8)
