"""``symwrap eval`` in process: model specs, data sources, methods side by side, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import symwrap
from symwrap import cli
from symwrap.errors import ConfigError, UnknownNameError
from symwrap.evaluation import precision as precision_module
from symwrap.evaluation.corruptions import build_corruptions
from symwrap.evaluation.data import open_data
from symwrap.evaluation.digits import load_digits
from symwrap.evaluation.digits_model import DIGITS_WEIGHTS, load_digits_model
from symwrap.evaluation.distributed import ShardSampler, steps_per_rank
from symwrap.evaluation.runner import EvalConfig, run_eval
from symwrap.evaluation.specs import load_model
from symwrap.evaluation.state import atomic_write_json
from tests import eval_helpers


@pytest.fixture
def mimic_plugins(builtins_only: None) -> Iterator[None]:
    plugin = eval_helpers.MimicPlugin()
    symwrap.register_plugin(plugin, name="mimic")
    eval_helpers.CALLS.clear()
    yield
    symwrap.unregister_plugin(plugin)


def _run(tmp_path: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("limit", 24)
    options.setdefault("batch_size", 8)
    options.setdefault("plot", False)
    options.setdefault("progress", False)
    options.setdefault("output_dir", str(tmp_path / "out"))
    options.setdefault("chunk_size", "none")  # no chunk tuning: the tests check numbers, not speed
    options.setdefault("probe_size", 4)
    results = run_eval(EvalConfig(**options))
    assert results is not None
    return results


def _digit_pngs(root: Path, count: int = 20, corrupt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` test digits as 8×8 grey PNGs in class folders (+ ``corrupt`` broken files)."""
    from PIL import Image

    images, labels = load_digits("test")
    pixels = (images[:count, 0].numpy() * 255).round().astype(np.uint8)
    for digit in range(10):  # every class folder, so folder order = label order
        (root / f"digit{digit}").mkdir(parents=True, exist_ok=True)
    for i, (array, label) in enumerate(zip(pixels, labels[:count].tolist())):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode="L").save(folder / f"{i:03d}.png")
    for j in range(corrupt):
        (root / "digit0").mkdir(parents=True, exist_ok=True)
        (root / "digit0" / f"broken{j}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return pixels, labels[:count].numpy()


# ----------------------------------------------------------------------------- the default model and data
def test_shipped_weights_are_small_safetensors_and_accurate_upright() -> None:
    assert DIGITS_WEIGHTS.is_file()
    assert DIGITS_WEIGHTS.stat().st_size <= 1_000_000
    assert DIGITS_WEIGHTS.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then JSON
    model = load_digits_model("").model
    images, labels = load_digits("test")
    with torch.no_grad():
        upright = (model(images).argmax(-1) == labels).float().mean().item()
        turned = (model(torch.rot90(images, 1, (-2, -1))).argmax(-1) == labels).float().mean().item()
    assert upright > 0.95
    assert turned < 0.6  # trained on upright digits only


@pytest.mark.slow
def test_methods_side_by_side_on_digits(builtins_only: None, tmp_path: Path) -> None:
    results = _run(tmp_path, limit=60, methods="plain,group_averaging")
    assert results["corruptions"] == ["0°", "90°", "180°", "270°", "random"]
    assert results["methods"] == ["plain", "group_averaging"]
    assert results["evaluated"] == 60
    averaged = results["correct"]["group_averaging"]
    assert len(set(averaged.values())) == 1  # invariance shows in the counts
    plain = results["accuracy"]["plain"]
    assert plain["0°"] > 0.9
    assert min(plain.values()) < plain["0°"] - 0.3
    assert results["invariance_error"]["group_averaging"] < 1e-5
    assert results["invariance_error"]["plain"] > 1e-2


def test_default_methods_skip_what_is_not_registered(builtins_only: None, tmp_path: Path) -> None:
    results = _run(tmp_path)
    assert results["methods"][:2] == ["plain", "group_averaging"]
    registry = symwrap.get_registry("method")
    for name, reason in results["methods_skipped"].items():
        assert name not in registry or reason.startswith("not applicable")


def test_corruptions_random_element_is_per_index_and_seeded() -> None:
    group = symwrap.get_group("rot90")
    a = build_corruptions(group, 50, seed=3)[-1].per_index
    b = build_corruptions(group, 50, seed=3)[-1].per_index
    c = build_corruptions(group, 50, seed=4)[-1].per_index
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(e.flatten().tolist()) for e in a}) == 4  # every rotation occurs


def test_corruption_columns_for_d4_and_a_continuous_group() -> None:
    d4 = build_corruptions(symwrap.get_group("d4"), 10, seed=0)
    assert [c.name for c in d4] == ["0°", "0°+m", "90°", "90°+m", "180°", "180°+m", "270°", "270°+m", "random"]
    assert [c.angle for c in d4[:-1:2]] == [0.0, 90.0, 180.0, 270.0]  # mirrors get no polar angle
    assert all(c.angle is None for c in d4[1:-1:2])
    so2 = build_corruptions(symwrap.get_group("so2"), 10, seed=0, samples=4)
    assert len(so2) == 5 and so2[0].name == "0°"  # the identity, then 3 seeded rotations, then random
    assert all(c.angle is not None for c in so2[:-1])


def test_groups_sized_by_the_data(builtins_only: None, tmp_path: Path) -> None:
    results = _run(tmp_path, group="shift", methods="plain", limit=4)
    assert len(results["corruptions"]) == 8 * 8 + 1  # every circular shift of an 8×8 digit, then random


def test_shard_sampler_covers_every_index_once() -> None:
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert steps_per_rank(11, 3, 2) == 2
    assert list(ShardSampler(11, 1, 3, start=2)) == [7, 10]


def test_results_json_has_configuration_versions_and_seed(builtins_only: None, tmp_path: Path) -> None:
    _run(tmp_path, seed=5, methods="plain")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["seed"] == 5
    assert saved["config"]["batch_size"] == 8
    assert saved["config"]["model"] == "digits"
    assert {"symwrap", "torch", "numpy", "python"} <= set(saved["versions"])
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ----------------------------------------------------------------------------- model specs
@pytest.mark.slow
def test_each_model_spec_kind_offline(mimic_plugins: None, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from symwrap.evaluation.digits import DigitsCNN

    hf_dir = tmp_path / "hf-model"
    hf_dir.mkdir()
    model = DigitsCNN(width=16)
    save_file(model.state_dict(), str(hf_dir / "model.safetensors"))
    (hf_dir / "config.json").write_text(json.dumps({"width": 16, "id2label": {str(i): str(i) for i in range(10)}}))
    checkpoint = tmp_path / "cnn.safetensors"
    save_file(eval_helpers.small_cnn().state_dict(), str(checkpoint))
    specs = {
        "digits": {},
        "digits:random": {},
        f"digits:{DIGITS_WEIGHTS}": {},
        "timm:resnet18": {"pretrained": "false"},
        f"hf:{hf_dir}": {},
        "open_clip:ViT-B-32@openai": {"pretrained": "false", "class_names": ",".join("abcdefghij")},
        "tests.eval_helpers:small_cnn": {"pretrained": str(checkpoint)},
        "tests.eval_helpers:digits_loaded": {},
        "python:tests.eval_helpers:small_cnn": {},
    }
    for spec, options in specs.items():
        results = _run(tmp_path, model=spec, methods="plain,group_averaging", group="flip", limit=8, **options)
        assert results["evaluated"] == 8, spec
        assert len(set(results["correct"]["group_averaging"].values())) == 1, spec
    calls = {prefix: (name, pretrained, options) for prefix, name, pretrained, options in eval_helpers.CALLS}
    assert calls["timm"] == ("resnet18", False, {})  # no class names through **options
    assert calls["hf"][0] == str(hf_dir)
    assert calls["open_clip"][0] == "ViT-B-32@openai"
    assert calls["open_clip"][2]["class_names"] == list("abcdefghij")


def test_zero_shot_loader_gets_the_dataset_class_names(mimic_plugins: None, tmp_path: Path) -> None:
    _run(tmp_path, model="open_clip:RN50", methods="plain", limit=8, templates="a photo of {}.|a {}.")
    assert eval_helpers.CALLS[-1] == (
        "open_clip",
        "RN50",
        False,  # the loader's own default: --pretrained was not given
        {"class_names": [str(d) for d in range(10)], "templates": ["a photo of {}.", "a {}."]},
    )


def test_shipped_and_random_digits_differ(builtins_only: None) -> None:
    trained, random = load_model("digits").model, load_model("digits:random").model
    assert not torch.equal(trained.head.weight, random.head.weight)


def test_saved_method_folder_is_loaded_with_from_pretrained(
    builtins_only: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``NAME=DIR`` goes through ``SymmetrizedModel.from_pretrained(base, DIR)`` (stood in for here)."""
    seen = []

    def from_pretrained(base: torch.nn.Module, directory: str) -> symwrap.SymmetrizedModel:
        seen.append(directory)
        return symwrap.wrap(base, "rot90", "group_averaging")

    monkeypatch.setattr(symwrap.SymmetrizedModel, "from_pretrained", staticmethod(from_pretrained), raising=False)
    saved = tmp_path / "saved"
    saved.mkdir()
    results = _run(tmp_path, methods=f"plain,equitune={saved}", limit=16)
    assert seen == [str(saved)]
    assert results["methods"] == ["plain", "equitune"]
    assert len(set(results["correct"]["equitune"].values())) == 1
    with pytest.raises(ConfigError, match=r"the folder holds method 'group_averaging', not 'monte_carlo'"):
        _run(tmp_path, methods=f"plain,monte_carlo={saved}", limit=16)


# ----------------------------------------------------------------------------- data sources
@pytest.mark.slow
def test_image_folder_matches_the_tensor_digits(builtins_only: None, tmp_path: Path) -> None:
    _digit_pngs(tmp_path / "folder", count=40)
    options = {"image_mode": "L", "methods": "plain,group_averaging", "limit": 40, "workers": 2}  # loader processes
    results = _run(tmp_path, data=str(tmp_path / "folder"), **options)
    assert results["evaluated"] == 40
    assert results["accuracy"]["plain"]["0°"] > 0.9
    assert len(set(results["correct"]["group_averaging"].values())) == 1


def test_corrupt_images_are_skipped_and_counted(builtins_only: None, tmp_path: Path, capsys: Any) -> None:
    _digit_pngs(tmp_path / "folder", count=12, corrupt=2)
    args = ["eval", "--data", str(tmp_path / "folder"), "--image-mode", "L", "--methods", "plain"]
    code = cli.main([*args, "--batch-size", "5", "--output-dir", str(tmp_path / "out"), "--no-plot", "--no-progress"])
    assert code == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["skipped_unreadable"] == 2
    assert saved["evaluated"] == 12
    assert "2 unreadable files skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_hugging_face_dataset_on_disk(builtins_only: None, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    images, labels = load_digits("test")
    pixels = (images[:30, 0].numpy() * 255).round().astype(np.uint8)
    features = datasets.Features(
        {"img": datasets.Image(), "digit": datasets.ClassLabel(names=[f"d{i}" for i in range(10)])}
    )
    table = {"img": [Image.fromarray(p, mode="L") for p in pixels], "digit": labels[:30].tolist()}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(table, features=features)}).save_to_disk(
        str(tmp_path / "hf")
    )
    data = open_data(str(tmp_path / "hf"), image_mode="L")
    assert data.class_names == [f"d{i}" for i in range(10)]
    results = _run(tmp_path, data=str(tmp_path / "hf"), image_mode="L", methods="plain,group_averaging", limit=30)
    assert results["evaluated"] == 30
    assert results["accuracy"]["plain"]["0°"] > 0.9
    assert len(set(results["correct"]["group_averaging"].values())) == 1


# ----------------------------------------------------------------------------- bad input
def test_unknown_model_spec_prefix(builtins_only: None) -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown model loader 'nosuch'.*Available model loaders: digits, python"
    ):
        load_model("nosuch:thing")
    with pytest.raises(UnknownNameError, match=r"'timm' loader comes with the symwrap-timm plugin.*pip install"):
        load_model("timm:resnet18")


def test_unknown_method_lists_registered_ones(builtins_only: None, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown method 'group_averagin'.*Did you mean 'group_averaging'"):
        _run(tmp_path, methods="plain,group_averagin")


def test_paths_that_do_not_exist(builtins_only: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--data '.*nowhere' does not exist"):
        _run(tmp_path, data=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"checkpoint '.*missing.safetensors' does not exist"):
        _run(tmp_path, model=f"digits:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ConfigError, match=r"--methods lambda_equitune=.*folder '.*nope' does not exist"):
        _run(tmp_path, methods=f"plain,lambda_equitune={tmp_path / 'nope'}")


def test_image_folder_without_images(builtins_only: None, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no class folders found"):
        _run(tmp_path, data=str(tmp_path / "empty"))
    (tmp_path / "empty" / "cats").mkdir()
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("no image here")
    with pytest.raises(ConfigError, match=r"no images found in its 1 class folder"):
        _run(tmp_path, data=str(tmp_path / "empty"))


def test_class_name_count_mismatch(builtins_only: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--class-names: 3 names, but the dataset digits test split has 10 classes"):
        _run(tmp_path, class_names="zero,one,two")


def test_resume_refuses_another_configuration(builtins_only: None, tmp_path: Path) -> None:
    _run(tmp_path, methods="plain", limit=16)
    with pytest.raises(ConfigError, match=r"differing fields: batch_size \(checkpoint: 8, now: 4\); seed"):
        _run(tmp_path, methods="plain", limit=16, batch_size=4, seed=1, resume=True)


def test_bf16_on_hardware_without_it(builtins_only: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def without_bf16(precision: str, device: torch.device) -> str | None:
        return "this CPU has no bfloat16 kernels" if precision == "bf16" else None

    monkeypatch.setattr(precision_module, "precision_supported", without_bf16)
    with pytest.raises(ConfigError, match=r"--precision bf16: this CPU has no bfloat16 kernels\. Use --precision fp32"):
        _run(tmp_path, precision="bf16")


def test_precision_probe_is_real() -> None:
    assert precision_module.precision_supported("fp32", torch.device("cpu")) is None
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():  # pragma: no cover - hardware
        assert precision_module.precision_supported("bf16", torch.device("cuda")) is not None


def test_cli_reports_errors_in_one_line(builtins_only: None, tmp_path: Path, capsys: Any) -> None:
    code = cli.main(["eval", "nosuch:thing", "--output-dir", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("symwrap eval: error: UnknownNameError: unknown model loader 'nosuch'")
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- symwrap check
@pytest.mark.slow
def test_check_command_table_and_plot(builtins_only: None, tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["check", "digits", "--group", "rot90", "--output-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "90°" in out
    saved = json.loads((tmp_path / "a" / "check.json").read_text())
    assert saved["elements"] == ["0°", "90°", "180°", "270°"]
    assert saved["relative_error"][0] == 0.0
    assert min(saved["relative_error"][1:]) > 1e-2
    assert (tmp_path / "a" / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = ["check", "digits", "--group", "d4", "--method", "group_averaging", "--output-dir", str(tmp_path / "b")]
    assert cli.main(args) == 0
    saved = json.loads((tmp_path / "b" / "check.json").read_text())
    assert len(saved["elements"]) == 8
    assert saved["max_error"] < 1e-5


def test_check_command_random_inputs_for_other_models(mimic_plugins: None, tmp_path: Path, capsys: Any) -> None:
    args = ["check", "timm:resnet18", "--group", "flip", "--input-shape", "1,8,8", "--output-dir", str(tmp_path)]
    assert cli.main([*args, "--no-plot"]) == 0
    assert "random inputs (1, 8, 8)" in capsys.readouterr().out
    assert cli.main(["check", "timm:resnet18", "--group", "flip", "--input-shape", "x", "--no-plot"]) == 2


# ----------------------------------------------------------------------------- --max-memory
def test_max_memory_reaches_the_wrapped_models(builtins_only: None, tmp_path: Path, monkeypatch: Any) -> None:
    built: list[Any] = []
    original = symwrap.wrap

    def recording_wrap(*args: Any, **kwargs: Any) -> Any:
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(symwrap, "wrap", recording_wrap)
    results = _run(tmp_path, methods="plain,group_averaging", chunk_size="auto", max_memory="64MiB", limit=8)
    assert set(results["accuracy"]) >= {"plain", "group_averaging"}
    assert built and all(w.engine.tuner.memory.max_memory == 64 * 2**20 for w in built)
    assert all(w.symwrap_config.max_memory == 64 * 2**20 for w in built)


def test_max_memory_bad_input(builtins_only: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--max-memory '1GB' caps the chunks that --chunk-size auto measures"):
        _run(tmp_path, max_memory="1GB")  # _run's default --chunk-size is none
    with pytest.raises(ConfigError, match=r"invalid option '--max-memory': cannot read 'lots' as a memory size"):
        _run(tmp_path, chunk_size="auto", max_memory="lots")
