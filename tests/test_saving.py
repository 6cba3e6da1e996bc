"""save_pretrained / from_pretrained: round trips, only symwrap's own weights, clear errors on mismatches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.errors import CheckpointError, ConfigError
from symwrap.saving import CONFIG_NAME, WEIGHTS_NAME
from tests.conftest import DenseCNN, SmallCNN


def _trained_lambda(base: nn.Module, images: torch.Tensor, **options) -> symwrap.SymmetrizedModel:
    wrapped = symwrap.wrap(base, "d4", "lambda_equitune", features="features", hidden=(16, 8), **options).eval()
    wrapped(images)
    with torch.no_grad():
        for p in wrapped.method.lambda_net.parameters():
            p.copy_(torch.randn_like(p))
    return wrapped


def test_lambda_equitune_round_trip(tmp_path: Path, cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = _trained_lambda(cnn, images, positive="exp", chunk_size=4)
    wrapped.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    saved = load_file(str(tmp_path / WEIGHTS_NAME))
    assert saved and all(k.startswith("lambda_net.") for k in saved), "only the λ-net, never the base model"
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["wrap"]["group"] == "d4" and config["wrap"]["method"] == "lambda_equitune"
    assert config["wrap"]["method_options"]["feature_dim"] == 8 and config["wrap"]["chunk_size"] == 4

    fresh_base = copy.deepcopy(cnn)
    loaded = symwrap.SymmetrizedModel.from_pretrained(fresh_base, tmp_path)
    assert not loaded.training and loaded.method.options.positive == "exp"
    assert all(not p.requires_grad for p in fresh_base.parameters())
    assert_close(loaded(images), wrapped(images), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("method", "options"),
    [("group_averaging", {}), ("equizero", {"proxy": "max_prob", "straight_through": True})],
)
def test_round_trip_of_methods_without_weights(
    tmp_path: Path, method: str, options: dict, cnn: SmallCNN, images: torch.Tensor
) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", method, reduce="probs", **options)
    wrapped.save_pretrained(tmp_path)
    assert load_file(str(tmp_path / WEIGHTS_NAME)) == {}
    loaded = symwrap.SymmetrizedModel.from_pretrained(cnn, tmp_path, method=method, group="rot90")
    assert loaded.method.options_dict() == wrapped.method.options_dict() and loaded.symwrap_config.reduce == "probs"
    with torch.no_grad():
        assert_close(loaded(images), wrapped(images))


def test_equivariant_round_trip_with_group_options(tmp_path: Path, dense_cnn: DenseCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(dense_cnn, "shift", output="equivariant", group_options={"stride": 8})
    wrapped.save_pretrained(tmp_path)
    loaded = symwrap.SymmetrizedModel.from_pretrained(dense_cnn, tmp_path)
    with torch.no_grad():
        assert_close(loaded(images), wrapped(images))


def test_feature_model_is_not_saved_and_must_be_passed_again(
    tmp_path: Path, cnn: SmallCNN, images: torch.Tensor
) -> None:
    feature_model = nn.Conv2d(3, 6, 3)
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", feature_model=feature_model).eval()
    wrapped(images)
    wrapped.save_pretrained(tmp_path)
    assert not any(k.startswith("feature_model") for k in load_file(str(tmp_path / WEIGHTS_NAME)))
    with pytest.raises(CheckpointError, match=r"saved with a separate feature model \(Conv2d\).*feature_model="):
        symwrap.SymmetrizedModel.from_pretrained(cnn, tmp_path)
    loaded = symwrap.SymmetrizedModel.from_pretrained(cnn, tmp_path, feature_model=feature_model)
    assert_close(loaded(images), wrapped(images))


def test_lambda_net_must_be_built_before_saving(tmp_path: Path, cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    with pytest.raises(ConfigError, match="the λ-net is not built yet"):
        wrapped.save_pretrained(tmp_path)


def test_callable_proxy_cannot_be_saved(tmp_path: Path, cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "equizero", proxy=lambda outputs: outputs.mean(-1))
    with pytest.raises(ConfigError, match=r"cannot write method option 'proxy' = .* not JSON data\. Use a registered"):
        wrapped.save_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def saved(tmp_path: Path, cnn: SmallCNN, images: torch.Tensor) -> Path:
    _trained_lambda(cnn, images).save_pretrained(tmp_path)
    return tmp_path


def test_config_for_another_group(saved: Path, cnn: SmallCNN) -> None:
    with pytest.raises(CheckpointError) as info:
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved, group="rot90")
    message = str(info.value)
    assert str(saved / CONFIG_NAME) in message and "group 'd4', not group 'rot90'" in message


def test_config_for_another_method(saved: Path, cnn: SmallCNN) -> None:
    with pytest.raises(CheckpointError) as info:
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved, method="equizero")
    message = str(info.value)
    assert str(saved / CONFIG_NAME) in message and "method 'lambda_equitune', not method 'equizero'" in message


def test_weights_of_another_method(saved: Path, tmp_path_factory: pytest.TempPathFactory, cnn: SmallCNN) -> None:
    other = tmp_path_factory.mktemp("other")
    symwrap.wrap(cnn, "d4", "equizero").save_pretrained(other)
    (saved / WEIGHTS_NAME).write_bytes((other / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match=r"holds weights for method 'equizero', but .* says 'lambda_equitune'"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


def test_base_model_of_another_class(saved: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        symwrap.SymmetrizedModel.from_pretrained(DenseCNN(), saved)
    message = str(info.value)
    assert "base model mismatch" in message and str(saved / CONFIG_NAME) in message
    assert "tests.conftest.SmallCNN" in message and "tests.conftest.DenseCNN was given" in message


def test_base_model_of_another_size(saved: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        symwrap.SymmetrizedModel.from_pretrained(SmallCNN(classes=7), saved)
    message = str(info.value)
    assert "base model mismatch" in message and str(saved / CONFIG_NAME) in message
    assert "head.weight has shape (7, 512), saved (5, 512)" in message


def test_base_model_with_other_weights_warns(saved: Path) -> None:
    with pytest.warns(UserWarning, match="the base model's weights differ from those saved"):
        symwrap.SymmetrizedModel.from_pretrained(SmallCNN(), saved)


@pytest.mark.parametrize("name", [CONFIG_NAME, WEIGHTS_NAME])
def test_missing_file(saved: Path, cnn: SmallCNN, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"{saved / name} not found"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


def test_corrupt_config(saved: Path, cnn: SmallCNN) -> None:
    (saved / CONFIG_NAME).write_text('{"format": "symwrap", "wrap": ')
    with pytest.raises(CheckpointError, match=f"{saved / CONFIG_NAME} is corrupt \\(not valid JSON"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


def test_not_a_symwrap_config(saved: Path, cnn: SmallCNN) -> None:
    (saved / CONFIG_NAME).write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(CheckpointError, match=f"{saved / CONFIG_NAME} is not a symwrap config"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


def test_corrupt_weights(saved: Path, cnn: SmallCNN) -> None:
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{saved / WEIGHTS_NAME} is corrupt"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


def test_lambda_net_of_another_size(saved: Path, cnn: SmallCNN) -> None:
    config = json.loads((saved / CONFIG_NAME).read_text())
    config["wrap"]["method_options"]["hidden"] = [4]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{saved / WEIGHTS_NAME} does not fit method 'lambda_equitune'"):
        symwrap.SymmetrizedModel.from_pretrained(cnn, saved)


# ---------------------------------------------------------------------------------------------- doors: config, kwargs
def test_config_is_the_base_models_and_symwrap_config_is_symwraps(cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "rot90")
    assert isinstance(wrapped.symwrap_config, symwrap.WrapConfig) and wrapped.symwrap_config.group == "rot90"
    with pytest.raises(AttributeError, match=r"SmallCNN has none; symwrap's own options are wrapped\.symwrap_config"):
        wrapped.config  # noqa: B018
    cnn.config = {"num_labels": 10}  # a base model with a config of its own: the wrapper shows it
    assert wrapped.config is cnn.config


def test_save_pretrained_takes_the_trainer_keywords(tmp_path: Path, cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = _trained_lambda(cnn, images)
    state = {k: v.clone() for k, v in wrapped.state_dict().items()}
    with torch.no_grad():  # the saved state is the one given, not the current one
        wrapped.method.lambda_net.last.bias.add_(1.0)
    wrapped.save_pretrained(tmp_path, state_dict=state, safe_serialization=True)
    saved = load_file(str(tmp_path / WEIGHTS_NAME))
    assert_close(saved["lambda_net.mlp.6.bias"], state["method.lambda_net.mlp.6.bias"], rtol=0, atol=0)
    wrapped.save_pretrained(tmp_path / "other_rank", is_main_process=False)
    assert not (tmp_path / "other_rank").exists()


def test_save_pretrained_refuses_pickles_and_unknown_keywords(tmp_path: Path, cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "rot90")
    with pytest.raises(ConfigError, match=r"safe_serialization=False\): symwrap writes safetensors only"):
        wrapped.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ConfigError, match=r"unsupported keyword argument\(s\) push_to_hub; .*base_model\.push_to_hub"):
        wrapped.save_pretrained(tmp_path, push_to_hub=True)
    lam = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features", feature_dim=8)
    with pytest.raises(ConfigError, match=r"lacks symwrap's learned weights method\.lambda_net"):
        lam.save_pretrained(tmp_path, state_dict={})


def test_folder_of_format_version_1_still_loads(tmp_path: Path, cnn: SmallCNN, images: torch.Tensor) -> None:
    """A folder as written before ``symwrap_config`` existed (format 1: no base-model config) loads unchanged."""
    from safetensors.torch import save_file

    from symwrap.saving import _describe

    wrapped = _trained_lambda(cnn, images)
    document = {
        "format": "symwrap",
        "format_version": 1,
        "wrap": {
            "group": "d4",
            "method": "lambda_equitune",
            "output": "invariant",
            "chunk_size": "auto",
            "reduce": "logits",
            "class_dim": -1,
            "adapter": "torch",
            "input": None,
            "select": None,
            "method_options": wrapped.method.options_dict(),
            "group_options": {},
            "action": None,
            "max_memory": None,
        },
        "base_model": _describe(cnn),
        "feature_model": None,
        "weights": WEIGHTS_NAME,
    }
    (tmp_path / CONFIG_NAME).write_text(json.dumps(document))
    save_file({k: v.contiguous() for k, v in wrapped.method.state_to_save().items()}, str(tmp_path / WEIGHTS_NAME))
    loaded = symwrap.SymmetrizedModel.from_pretrained(copy.deepcopy(cnn), tmp_path)
    assert loaded.symwrap_config.group == "d4"
    assert_close(loaded(images), wrapped.eval()(images), rtol=1e-6, atol=1e-6)  # chunk_size="auto" may chunk otherwise


# ---------------------------------------------------------------------------------------------- whole-state folders
def test_state_dict_folder_rebuilds_with_the_base_models_weights(
    tmp_path: Path, cnn: SmallCNN, images: torch.Tensor
) -> None:
    """What HF Trainer.save_model writes for a wrapper: model.safetensors = wrapped.state_dict() (config included)."""
    from safetensors.torch import save_file

    from symwrap.saving import STATE_CONFIG_KEY, STATE_NAME

    wrapped = _trained_lambda(cnn, images, chunk_size=4)
    with torch.no_grad():
        cnn.head.weight.add_(1.0)  # a fine-tuned base: its weights travel with the folder
    state = wrapped.state_dict()
    assert state[STATE_CONFIG_KEY].dtype == torch.uint8 and STATE_CONFIG_KEY not in wrapped.state_dict(keep_vars=True)
    save_file(state, str(tmp_path / STATE_NAME))
    with pytest.raises(CheckpointError, match=r"rebuild only for Hugging Face transformers models: pass .*base_model="):
        symwrap.SymmetrizedModel.from_pretrained(tmp_path)
    loaded = symwrap.SymmetrizedModel.from_pretrained(tmp_path, base_model=SmallCNN())  # an architecture only
    assert_close(loaded.base_model.head.weight, cnn.head.weight, rtol=0, atol=0)
    assert loaded.symwrap_config.chunk_size == 4 and not loaded.training
    assert_close(loaded(images), wrapped.eval()(images), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"saved with a tests\.conftest\.SmallCNN, but a .*DenseCNN was given"):
        symwrap.SymmetrizedModel.from_pretrained(tmp_path, base_model=DenseCNN())


def test_a_plain_state_file_is_not_taken_for_a_wrapper(tmp_path: Path, cnn: SmallCNN) -> None:
    from safetensors.torch import save_file

    save_file(cnn.state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"no 'symwrap_config' entry: it is not the state_dict of a symwrap"):
        symwrap.SymmetrizedModel.from_pretrained(tmp_path, base_model=cnn)


def test_save_pretrained_folder_needs_the_base_model(saved: Path) -> None:
    with pytest.raises(CheckpointError, match=r"symwrap's own weights only.*from_pretrained\(directory, base_model="):
        symwrap.SymmetrizedModel.from_pretrained(saved)
