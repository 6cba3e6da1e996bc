"""λ-equitune under Lightning: ``configure_optimizers`` runs before any forward, and the λ-net built at wrap time
(``example_input=``) is in the optimizer and trains; the wrapped model stays exactly invariant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import symwrap
from tests.conftest import SmallCNN

lightning = pytest.importorskip("lightning")


class _Module(lightning.LightningModule):
    def __init__(self, wrapped: symwrap.SymmetrizedModel) -> None:
        super().__init__()
        self.wrapped = wrapped

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.wrapped(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.05)


@pytest.mark.slow
def test_lightning_trains_the_lambda_net(tmp_path) -> None:
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 5
    wrapped = symwrap.wrap(SmallCNN(), "rot90", "lambda_equitune", features="features", example_input=x[:2])
    before = {k: v.clone() for k, v in wrapped.method.lambda_net.state_dict().items()}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer = lightning.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Module(wrapped), loader)
    after = wrapped.method.lambda_net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the λ-net trained"
    wrapped.eval()
    with torch.no_grad():
        out = wrapped(x)
        assert_close(wrapped(torch.rot90(x, 1, (-2, -1))), out, rtol=1e-5, atol=1e-5)
