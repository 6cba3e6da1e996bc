"""A wrapped tiny HF ViT (random init) under ``transformers.Trainer`` with its defaults: the dataset columns the
ViT takes survive ``remove_unused_columns=True``, the loss is that of the symmetrized prediction, ``evaluate()``
reports ``eval_loss`` and ``compute_metrics`` gets the labels, and the trained model is still exactly invariant.

Tolerance of the invariance checks: float32, ``rtol=1e-5``, ``atol=1e-5``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

import symwrap

pytest.importorskip("accelerate")  # transformers.Trainer needs it (the plugin's test extra installs it)

SIZE, CLASSES = 16, 3


def _vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=8,
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=CLASSES,
    )
    return ViTForImageClassification(config)


def _rows(count: int, seed: int) -> list[dict[str, object]]:
    """Images whose label is their brightest channel (a rotation-invariant rule), plus a column the ViT ignores."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator)
    labels = torch.arange(count) % CLASSES
    images[torch.arange(count), labels] += 0.5
    return [{"pixel_values": x, "labels": int(y), "note": i} for i, (x, y) in enumerate(zip(images, labels))]


def _train(wrapped: symwrap.SymmetrizedModel, tmp_path: Path, lr: float) -> tuple[Trainer, list[float], dict]:
    seen: list[object] = []

    def compute_metrics(prediction) -> dict[str, float]:
        seen.append(prediction.label_ids)
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=6,
        per_device_eval_batch_size=6,
        max_steps=6,
        learning_rate=lr,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=wrapped,
        args=args,
        train_dataset=_rows(6, 0),
        eval_dataset=_rows(6, 1),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = trainer.evaluate()
    assert seen and seen[-1] is not None and list(seen[-1]) == [0, 1, 2, 0, 1, 2], "compute_metrics got the labels"
    return trainer, losses, metrics


def _assert_invariant(wrapped: symwrap.SymmetrizedModel) -> None:
    x = torch.randn(2, 3, SIZE, SIZE)
    wrapped.eval()
    with torch.no_grad():
        out = wrapped(pixel_values=x).logits
        for k in (1, 2, 3):
            assert_close(wrapped(pixel_values=torch.rot90(x, k, (-2, -1))).logits, out, rtol=1e-5, atol=1e-5)


def test_forward_signature_and_loss_of_the_combined_prediction() -> None:
    import inspect

    vit = _vit().eval()
    with torch.no_grad():  # large logits: the copies' predictions, and so their losses, differ
        vit.classifier.weight.mul_(100.0)
    wrapped = symwrap.wrap(vit, "rot90")
    params = inspect.signature(wrapped.forward).parameters
    assert "pixel_values" in params and "labels" in params
    rows = _rows(6, 0)
    x = torch.stack([r["pixel_values"] for r in rows])
    y = torch.tensor([r["labels"] for r in rows])
    out = wrapped(pixel_values=x, labels=y)
    assert_close(out.loss, F.cross_entropy(wrapped(pixel_values=x).logits, y))
    assert next(iter(out.keys())) == "loss"
    per_copy = torch.stack(
        [wrapped.base_model(pixel_values=torch.rot90(x, k, (-2, -1)), labels=y).loss for k in range(4)]
    )
    # cross-entropy is convex in the logits: the loss of the mean prediction is below the mean of per-copy losses
    assert out.loss < per_copy.mean() - 1e-3, "the loss of the combined prediction, not a mean of per-copy losses"


@pytest.mark.slow
def test_trainer_trains_group_averaging(tmp_path: Path) -> None:
    wrapped = symwrap.wrap(_vit(), "rot90", chunk_size=None)
    _, losses, metrics = _train(wrapped, tmp_path, lr=3e-3)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert "eval_loss" in metrics and math.isfinite(metrics["eval_loss"]) and "eval_accuracy" in metrics
    _assert_invariant(wrapped)


@pytest.mark.slow
def test_trainer_trains_the_lambda_net(tmp_path: Path) -> None:
    wrapped = symwrap.wrap(_vit(), "rot90", "lambda_equitune", chunk_size=None)
    before = {k: v.clone() for k, v in wrapped.method.lambda_net.state_dict().items()}
    trainer, losses, metrics = _train(wrapped, tmp_path, lr=5e-2)
    after = wrapped.method.lambda_net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the λ-net trained"
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert "eval_loss" in metrics and math.isfinite(metrics["eval_loss"])
    _assert_invariant(wrapped)

    # trainer.save_model writes the whole wrapper (safetensors): one call rebuilds it, base model included
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "model.safetensors").is_file() and not (
        tmp_path / "saved" / "pytorch_model.bin"
    ).exists()
    loaded = symwrap.SymmetrizedModel.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded.base_model, ViTForImageClassification) and not loaded.training
    for (name, a), b in zip(wrapped.base_model.state_dict().items(), loaded.base_model.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_close(loaded(pixel_values=x).logits, wrapped.eval()(pixel_values=x).logits, rtol=0, atol=0)
