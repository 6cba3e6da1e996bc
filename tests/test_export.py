"""Recording a wrapped model: ``torch.export`` (dynamic batch), ``torch.jit.trace``, ``torch.onnx.export``.

A static plan records to a graph that equals the eager wrapper on new data; a plan that depends on the data is
refused with a RecordingError by every recorder; a recording leaves no trace in the wrapper (its later eager calls
equal those of a copy that was never recorded, and no placeholder tensor or symbolic size stays in any cache).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor

import symwrap
from symwrap.errors import RecordingError
from symwrap.export import batch_dynamic_shapes, export
from tests.conftest import PointMLP

pytestmark = pytest.mark.slow


class PoolCNN(nn.Module):
    """Not invariant: a strided conv and a position-dependent pooled head; any image size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(torch.relu(self.features(x)), 2).flatten(1))


def _lambda() -> symwrap.SymmetrizedModel:
    wrapped = symwrap.wrap(PoolCNN(), "rot90", "lambda_equitune", features="features", feature_dim=8, chunk_size=4)
    torch.nn.init.normal_(wrapped.method.lambda_net.last.weight)  # not constant: the features matter
    return wrapped


def _images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8)


def _clouds(batch: int) -> torch.Tensor:
    return torch.randn(batch, 6, 3)


#: Methods whose plan is the same for every input: recorded exactly. A fixed chunk size (``"auto"`` times forwards,
#: and two wrappers timed apart may choose differently, which changes float32 rounding).
STATIC: dict[str, tuple[Callable[[], symwrap.SymmetrizedModel], Callable[[int], torch.Tensor]]] = {
    "group_averaging": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", chunk_size=4), _images),
    "equizero": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", "equizero", chunk_size=4), _images),
    "lambda_equitune": (_lambda, _images),
    "frame_averaging (finite group)": (
        lambda: symwrap.wrap(PoolCNN().eval(), "d4", "frame_averaging", chunk_size=4),
        _images,
    ),
    "equivariant outputs": (
        lambda: symwrap.wrap(nn.Conv2d(3, 2, 3, padding=1), "d4", output="equivariant", chunk_size=4),
        _images,
    ),
}

#: Methods whose plan depends on each input: refused by every recorder.
DATA_DEPENDENT: dict[str, tuple[Callable[[], symwrap.SymmetrizedModel], Callable[[int], torch.Tensor]]] = {
    "canonicalization (learned)": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", "canonicalization"), _images),
    "canonicalization (PCA)": (lambda: symwrap.wrap(PointMLP().eval(), "o3", "canonicalization"), _clouds),
    "frame_averaging (PCA)": (lambda: symwrap.wrap(PointMLP().eval(), "o3", "frame_averaging"), _clouds),
    "monte_carlo (unseeded)": (lambda: symwrap.wrap(PointMLP().eval(), "so3", "monte_carlo", samples=5), _clouds),
}


def _placeholders(root: Any) -> list[str]:
    """Paths to FakeTensors and symbolic sizes anywhere in ``root``'s objects (modules, caches, plans, closures)."""
    found: list[str] = []
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None), torch.dtype)):
            return
        seen.add(id(value))
        if isinstance(value, (FakeTensor, torch.SymInt, torch.SymFloat)):
            found.append(path)
        elif isinstance(value, torch.Tensor):
            return
        elif isinstance(value, dict):
            for k, v in list(value.items()):
                visit(k, f"{path}[key {k!r}]")
                visit(v, f"{path}[{k!r}]")
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, v in enumerate(list(value)):
                visit(v, f"{path}[{i}]")
        elif callable(value) and hasattr(value, "__closure__") and value.__closure__:
            for i, cell in enumerate(value.__closure__):
                visit(cell.cell_contents, f"{path}.<closure {i}>")
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            for k, v in vars(value).items():
                visit(v, f"{path}.{k}")
        elif hasattr(value, "__slots__"):
            for k in value.__slots__:
                visit(getattr(value, k, None), f"{path}.{k}")

    visit(root, "wrapped")
    return found


@pytest.mark.parametrize("case", list(STATIC))
def test_export_with_a_dynamic_batch_equals_eager_and_leaves_no_trace(case: str) -> None:
    build, data = STATIC[case]
    wrapped = build()
    never_recorded = copy.deepcopy(wrapped)
    program = export(wrapped, (data(3),))  # a fresh wrapper: nothing was run eagerly
    assert _placeholders(wrapped) == []
    for batch in (1, 5):  # other batch sizes than the example's
        x = data(batch)
        expected = never_recorded(x)
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(wrapped(x), expected, rtol=0, atol=0)  # the eager caches were never touched
    assert _placeholders(wrapped) == []


def test_seeded_monte_carlo_records_for_its_example_batch_size_only() -> None:
    wrapped = symwrap.wrap(PointMLP().eval(), "so3", "monte_carlo", samples=5, seed=0, chunk_size=4)
    reference = copy.deepcopy(wrapped)
    with pytest.raises(RecordingError, match=r"'monte_carlo' with a dynamic batch size.*dynamic_batch=False"):
        export(wrapped, (_clouds(3),))
    program = export(wrapped, (_clouds(3),), dynamic_batch=False)
    x = _clouds(3)
    torch.testing.assert_close(program.module()(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapped(x), reference(x), rtol=0, atol=0)
    assert _placeholders(wrapped) == []


def test_export_spec_follows_the_base_models_signature() -> None:
    """``wrapped.forward`` shows the base ``forward(x)``: the spec is the plain module's, one entry per argument."""
    wrapped = symwrap.wrap(PoolCNN().eval(), "rot90")
    x = _images(2)
    spec = batch_dynamic_shapes(wrapped, (x,))
    assert len(spec) == 1 and isinstance(spec[0], dict) and 0 in spec[0]
    program = torch.export.export(wrapped, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    x = _images(4)
    torch.testing.assert_close(program.module()(x), wrapped(x), rtol=1e-5, atol=1e-5)


def test_export_spec_for_a_base_model_taking_variable_arguments() -> None:
    """A base ``forward(*args)`` takes its positional arguments as one tuple: the spec nests one level deeper."""

    class VarArgs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = PoolCNN()

        def forward(self, *args: Tensor) -> Tensor:
            return self.inner(args[0])

    wrapped = symwrap.wrap(VarArgs().eval(), "rot90", adapter="torch", input=0)
    x = _images(2)
    spec = batch_dynamic_shapes(wrapped, (x,))
    assert len(spec) == 1 and isinstance(spec[0], tuple) and 0 in spec[0][0]
    program = torch.export.export(wrapped, (x,), dynamic_shapes=spec)
    x = _images(4)
    torch.testing.assert_close(program.module()(x), wrapped(x), rtol=1e-5, atol=1e-5)


def test_export_after_eager_calls_and_eager_after_export() -> None:
    wrapped = symwrap.wrap(PoolCNN().eval(), "d4")  # chunk_size="auto": the tuner's choices are kept
    reference = copy.deepcopy(wrapped)
    for batch in (2, 3):
        wrapped(_images(batch))  # warm: caches, fast path and tuned chunk sizes exist
    tuned = dict(wrapped.engine.tuner.cache)
    program = export(wrapped, (_images(3),))
    assert wrapped.engine.tuner.cache == tuned
    x = _images(3)
    torch.testing.assert_close(program.module()(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapped(x), reference(x), rtol=1e-6, atol=1e-6)  # both tuned on their own
    assert _placeholders(wrapped) == []


def test_lambda_equitune_without_a_lambda_net_is_refused() -> None:
    wrapped = symwrap.wrap(PoolCNN(), "rot90", "lambda_equitune", features="features").eval()
    with pytest.raises(RecordingError, match=r"before its λ-net exists.*feature_dim"):
        export(wrapped, (_images(2),))
    wrapped(_images(2))  # still fine eagerly, and recordable afterwards
    program = export(wrapped, (_images(2),))
    x = _images(3)
    torch.testing.assert_close(program.module()(x), wrapped(x), rtol=1e-5, atol=1e-5)


def _record_with(recorder: str, wrapped: nn.Module, x: torch.Tensor) -> Any:
    if recorder == "torch.export":
        return export(wrapped, (x,))
    if recorder == "torch.jit.trace":
        return torch.jit.trace(wrapped, (x,))
    return torch.onnx.export(wrapped, (x,), io.BytesIO(), dynamo=False)


@pytest.mark.parametrize("recorder", ["torch.export", "torch.jit.trace", "torch.onnx.export"])
@pytest.mark.parametrize("case", list(DATA_DEPENDENT))
def test_data_dependent_plans_are_refused(case: str, recorder: str) -> None:
    build, data = DATA_DEPENDENT[case]
    wrapped = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, torch.jit.TracerWarning))
        with pytest.raises(RecordingError, match=rf"{recorder} cannot record method .*plan depends on each input"):
            _record_with(recorder, wrapped, data(2))
    assert _placeholders(wrapped) == []
    out = wrapped(data(2))  # eager calls still work
    assert torch.isfinite(out).all()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_of_a_static_plan_equals_eager_on_new_data() -> None:
    wrapped = symwrap.wrap(PoolCNN().eval(), "d4", "equizero", chunk_size=4)
    reference = copy.deepcopy(wrapped)
    traced = torch.jit.trace(wrapped, (_images(3),), check_trace=False)  # its re-trace differs in module names only
    x = _images(3)  # jit.trace records the example's batch size
    torch.testing.assert_close(traced(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapped(x), reference(x), rtol=0, atol=0)
    assert _placeholders(wrapped) == []


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo exporter", "legacy exporter"])
def test_onnx_export_of_group_averaging_runs_in_onnxruntime(dynamo: bool) -> None:
    import onnxruntime as ort  # in the dev extra, with onnxscript (the dynamo exporter's)

    wrapped = symwrap.wrap(PoolCNN().eval(), "d4", chunk_size=4).eval()
    example = _images(3)
    if dynamo:
        program = torch.onnx.export(
            wrapped, (example,), dynamo=True, dynamic_shapes=batch_dynamic_shapes(wrapped, (example,))
        )
        model_bytes = program.model_proto.SerializeToString()
        x = _images(5)  # another batch size
    else:
        buffer = io.BytesIO()
        torch.onnx.export(wrapped, (example,), buffer, dynamo=False)
        model_bytes = buffer.getvalue()
        x = _images(3)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), wrapped(x).detach(), rtol=1e-5, atol=1e-5)
    assert _placeholders(wrapped) == []


def test_a_call_on_fake_tensors_fills_no_cache() -> None:
    """Tools that run a model on FakeTensors (memory estimators, tracers other than export) take the cache-free
    path: nothing fake stays behind for the next eager call."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    wrapped = symwrap.wrap(PoolCNN().eval(), "d4", chunk_size=4)
    reference = copy.deepcopy(wrapped)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        out = wrapped(mode.from_tensor(_images(3)))
    assert isinstance(out, FakeTensor) and out.shape == (3, 5)
    assert _placeholders(wrapped) == []
    x = _images(3)
    torch.testing.assert_close(wrapped(x), reference(x), rtol=0, atol=0)
