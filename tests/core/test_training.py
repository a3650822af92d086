import torch
from torch import nn

from cxraug.core.training import standing_statistics


def test_standing_statistics_are_the_average_of_the_models_own_batch_statistics():
    """Every batch counts the same (a cumulative average, whatever the norm's momentum), stale statistics
    are forgotten, and the model is left in eval mode with its momentum as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3))
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)  # stale, as an EMA's averaged statistics are
        batches = [(torch.randn(8, 3) * (i + 1) + i,) for i in range(3)]
        hidden = [model[0](x) for (x,) in batches]
    standing_statistics(model, batches)
    torch.testing.assert_close(model[1].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([h.var(0) for h in hidden]).mean(0))
    assert not model.training and model[1].momentum == 0.3
