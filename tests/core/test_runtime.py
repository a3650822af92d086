import pytest
import torch

from cxraug.core.checkpoint import Checkpointer
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_save, atomic_write_text, pick_device, pick_precision, safe_load


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_text(target, "old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"x": Boom()}, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_safe_load_refuses_arbitrary_objects_and_garbage(tmp_path):
    torch.save({"fine": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(safe_load(tmp_path / "ok.pt")["fine"], torch.ones(2))
    torch.save({"fn": print}, tmp_path / "code.pt")
    with pytest.raises(CxraugError, match="cannot be read as a checkpoint"):
        safe_load(tmp_path / "code.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CxraugError, match="delete it and rerun"):
        safe_load(tmp_path / "bad.pt")
    with pytest.raises(CxraugError, match="not found"):
        safe_load(tmp_path / "none.pt")


def _model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def test_checkpoint_restores_step_weights_optimizer_and_rng(tmp_path):
    model, opt = _model_and_optimizer(0)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4, generator=gen)).pow(2).mean().backward()
        opt.step()
    ckpt = Checkpointer(tmp_path / "state.pt", fingerprint="abc")
    ckpt.save(step=3, epoch=1, modules={"m": model}, optimizers={"o": opt}, generator=gen, run_id="r1")
    expected_next = torch.randn(3, generator=gen)

    model2, opt2 = _model_and_optimizer(1)
    gen2 = torch.Generator().manual_seed(0)
    resumed = Checkpointer(tmp_path / "state.pt", "abc").restore({"m": model2}, {"o": opt2}, gen2)
    assert (resumed.step, resumed.epoch, resumed.run_id) == (3, 1, "r1")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.randn(3, generator=gen2), expected_next)


def test_checkpoint_from_other_settings_is_set_aside_not_resumed(tmp_path):
    model, opt = _model_and_optimizer(0)
    gen = torch.Generator()
    Checkpointer(tmp_path / "state.pt", "old").save(
        step=5, epoch=0, modules={"m": model}, optimizers={"o": opt}, generator=gen, run_id=None
    )
    assert Checkpointer(tmp_path / "state.pt", "new").restore({"m": model}, {"o": opt}, gen) is None
    assert [p.name.startswith("state.pt.stale-") for p in tmp_path.iterdir()] == [True]


def test_device_and_precision_choices():
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(CxraugError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_precision(torch.device("cpu"), "fp32").bf16 is False
    auto = pick_precision(torch.device("cpu"), "auto")
    assert isinstance(auto.bf16, bool) and isinstance(auto.channels_last, bool)


def test_end_progress_closes_an_unfinished_bar_so_a_message_starts_a_new_line():
    import io

    from cxraug.core.runtime import end_progress, progress

    out = io.StringIO()
    bar = progress(total=100, desc="read synthetic", disable=False, file=out, mininterval=0)
    bar.update(3)
    end_progress()
    assert bar.disable  # closed
    assert out.getvalue().endswith("\n")  # the error line that follows is a line of its own
