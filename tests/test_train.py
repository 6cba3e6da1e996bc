"""Training helpers: fit() improves λ with the base frozen; one DDP step (gloo, 2 CPU processes) agrees."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

import symwrap
import symwrap.train
from symwrap.errors import ConfigError
from tests.conftest import SmallCNN


def _data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    return torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 5, (4,), generator=generator)


def _model() -> symwrap.SymmetrizedModel:
    torch.manual_seed(0)
    model = symwrap.wrap(SmallCNN(), "rot90", "lambda_equitune", features="features", chunk_size=None)
    with torch.no_grad():  # build the λ-net, then give its last layer weights so every parameter gets a gradient
        symwrap.train.prepare(model, _data(0)[0][:2], train_head="head")
        model.method.lambda_net.mlp[-1].weight.normal_()
    return model


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(symwrap.train.trainable_parameters(ddp), lr=0.0)  # lr 0: compare gradients
        x, y = _data(rank)
        symwrap.train.train_step(ddp, x, y, optimizer)
        grads = {n: p.grad.contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(grads, str(Path(out) / f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.integration
def test_one_ddp_step_gives_equal_gradients_across_ranks(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert sorted(rank0) == sorted(rank1)
    assert any(k.startswith("method.lambda_net.") for k in rank0) and "base_model.head.weight" in rank0
    assert not any(k.startswith("base_model.features") for k in rank0), "the backbone stays frozen"
    # The same on both ranks, and equal to one process's gradient on both ranks' data (DDP averages).
    model = _model()
    (x0, y0), (x1, y1) = _data(0), _data(1)
    model.train()
    loss = (F.cross_entropy(model(x0), y0) + F.cross_entropy(model(x1), y1)) / 2
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert rank0[name].abs().sum() > 0, name
            assert_close(rank0[name], rank1[name], rtol=0, atol=0)
            assert_close(rank0[name], p.grad, rtol=1e-5, atol=1e-6)


def test_fit_trains_lambda_only(images: torch.Tensor) -> None:
    base = SmallCNN()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = symwrap.wrap(base, "rot90", "lambda_equitune", features="features")
    labels = torch.tensor([0, 1, 2])
    losses = symwrap.train.fit(model, images, labels, steps=30, batch_size=3, lr=1e-2)
    assert losses[-1] < losses[0]
    assert not model.training
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), f"base weight {k} changed"


def test_group_augment_moves_each_input_by_a_group_element(images: torch.Tensor) -> None:
    group = symwrap.get_group("rot90")
    moved = symwrap.train.group_augment(group)(images, torch.Generator().manual_seed(0))
    for i in range(len(images)):
        assert any(torch.equal(moved[i], torch.rot90(images[i], k, dims=(-2, -1))) for k in range(4))


def test_prepare_rejects_unknown_head_and_methods_without_parameters(images: torch.Tensor) -> None:
    model = symwrap.wrap(SmallCNN(), "rot90", "lambda_equitune", features="features")
    with pytest.raises(ConfigError, match="invalid option 'train_head': the base model has no submodule 'classifier'"):
        symwrap.train.prepare(model, images, train_head="classifier")
    with pytest.raises(ConfigError, match="method 'group_averaging' has no trainable parameters"):
        symwrap.train.prepare(symwrap.wrap(SmallCNN().requires_grad_(False), "rot90"), images)
