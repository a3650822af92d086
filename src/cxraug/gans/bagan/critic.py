"""Is BAGAN's discriminator a classifier the filter can lean on? D judged on the REAL val split, per class.

The synthesis filter keeps a generated image when D assigns it to the intended class, so D must tell the
real classes apart: this reports, per class, the one-vs-rest AUC of D's softmax probability of that class
on real val images, and recall (D's top class among the K real ones is the true class), whose mean over
classes is the balanced accuracy. Plain accuracy over val would be no evidence at all: a D that calls
every image No Finding scores No Finding's share of val (73.6% on the real subset).
"""

from __future__ import annotations

import numpy as np
import torch

from cxraug.core.runtime import Precision
from cxraug.core.training import evaluating, slices
from cxraug.data.datasets import Split, to_model_range
from cxraug.metrics.auc import per_class_auc


def discriminator_probabilities(d: torch.nn.Module, images: torch.Tensor, precision: Precision) -> np.ndarray:
    """D's softmax over its K+1 outputs (K classes, then "generated") for uint8 images -> [N, K + 1]."""
    with evaluating(d), precision.autocast():
        out = [
            d(precision.batch(to_model_range(images[sl]))).float().softmax(1).cpu()
            for sl in slices(len(images))
        ]
    return torch.cat(out).numpy()


def discriminator_report(probabilities: np.ndarray, split: Split) -> dict:
    """Per-class one-vs-rest AUC and recall of D on real images, balanced accuracy, and how often D's
    top output (of all K+1) is the true class (the `argmax` filter's rule applied to real images)."""
    labels, k = split.labels.numpy(), split.n_classes
    real = probabilities[:, :k]
    auc = per_class_auc(real, labels)
    top_real = real.argmax(1)
    recall = np.array([(top_real[labels == c] == c).mean() for c in range(k)])
    top_all = probabilities.argmax(1)
    return {
        "d_val_auc": dict(zip(split.classes, auc.round(5).tolist(), strict=True)),
        "d_val_macro_auc": round(float(auc.mean()), 5),
        "d_val_recall": dict(zip(split.classes, recall.round(5).tolist(), strict=True)),
        "d_val_balanced_accuracy": round(float(recall.mean()), 5),
        "d_val_argmax_pass": dict(
            zip(
                split.classes,
                [round(float((top_all[labels == c] == c).mean()), 5) for c in range(k)],
                strict=True,
            )
        ),
        "d_val_predicted": dict(
            zip([*split.classes, "generated"], np.bincount(top_all, minlength=k + 1).tolist(), strict=True)
        ),
    }
