"""torch.compile: the engine's hot path traces without graph breaks once the chunk size is known.

Most tests use the ``eager``/``aot_eager`` backends (they trace exactly what inductor would, in a fraction of
the time); one slow test compiles with the default inductor backend. ``benchmarks/compile_breaks.py`` reports
the breaks of the plugin backbones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch._dynamo.utils import counters

import symwrap
from tests.conftest import DenseCNN, PointMLP, SmallCNN


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _breaks(model: nn.Module, *args: Any) -> int:
    """Graph breaks when tracing ``model(*args)`` (after a warm-up call that tunes the chunk size)."""
    with torch.no_grad():
        model(*args)
        torch._dynamo.reset()
        return torch._dynamo.explain(model)(*args).graph_break_count


def _compiled_matches_eager(model: nn.Module, *args: Any, backend: str = "aot_eager", atol: float = 1e-5) -> None:
    with torch.no_grad():
        eager = model(*args)
        compiled = torch.compile(model, backend=backend)(*args)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_group_averaging_invariant_has_no_graph_breaks(group: str, images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), group)
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


def test_shift_group_has_no_graph_breaks(images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), "shift", group_options={"stride": 8})
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


def test_group_averaging_equivariant_has_no_graph_breaks(images: Tensor) -> None:
    model = symwrap.wrap(DenseCNN().eval(), "d4", output="equivariant")
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


def test_untuned_compiled_call_tunes_then_recompiles_without_breaks(images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), "d4")  # chunk_size="auto", nothing measured yet
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        first = compiled(images)  # breaks once: the tuner times real forwards outside the graph
        assert sum(counters["graph_break"].values()) >= 1
        assert model.engine.tuner.cache  # the size was measured
        counters.clear()
        second = compiled(images)  # the tuned size is a dict lookup: the new trace has no break
        assert sum(counters["graph_break"].values()) == 0
        eager = model(images)
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, eager, rtol=1e-5, atol=1e-5)


def test_a_compiled_base_model_runs_compiled_under_the_tuner_s_memory_meter(images: Tensor) -> None:
    """The first call of chunk_size='auto' runs a chunk under the memory meter (a TorchDispatchMode that does not
    disable dynamo): a base model compiled by the user still compiles and runs there, with its eager result."""
    base = SmallCNN().eval()
    compiled_base = torch.compile(base, backend="eager")
    model = symwrap.wrap(compiled_base, "d4")
    with torch.no_grad():
        first = model(images)  # measured: the compiled forward runs under the meter
        assert model.engine.tuner.layouts, "the first call measured memory"
        eager = symwrap.wrap(base, "d4", chunk_size=None)(images)
    assert sum(counters["stats"].values()) > 0, "dynamo compiled the base model's forward"
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_fixed_chunk_sizes_have_no_graph_breaks(chunk_size: int | None, images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), "d4", chunk_size=chunk_size)  # 24 rows: 5 leaves a ragged chunk
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


@pytest.mark.parametrize(("method", "group", "options"), [("equizero", "d4", {}), ("canonicalization", "rot90", {})])
def test_selection_methods_have_no_graph_breaks(method: str, group: str, options: dict, images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), group, method, **options)
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


@pytest.mark.parametrize("group", ["d4", "so2"])  # so2: interpolated rotations
def test_monte_carlo_seeded_has_no_graph_breaks(group: str, images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), group, "monte_carlo", samples=4, seed=0)
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)


def _trained_lambda(images: Tensor, **options: Any) -> nn.Module:
    """λ-equitune on a small CNN with random λ-net weights (an untrained λ-net is constant: group averaging)."""
    model = symwrap.wrap(SmallCNN().eval(), "d4", "lambda_equitune", features="features", **options)
    with torch.no_grad():
        model(images)
        for p in model.method.lambda_net.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("chunk_size", ["auto", 12])
def test_lambda_equitune_has_no_graph_breaks(chunk_size: Any, images: Tensor) -> None:
    model = _trained_lambda(images, chunk_size=chunk_size)
    assert _breaks(model, images) == 0
    _compiled_matches_eager(model, images)  # compiled, the λ-net's layer norm is folded into its first layer


def test_frame_averaging_compiles_with_breaks_in_the_plan_only() -> None:
    """PCA frames check their inputs and degeneracy with data-dependent Python branches (``bool(...)``), so the
    plan runs eagerly between graphs; the forwards and the reduction are still compiled and match eager."""
    model = symwrap.wrap(PointMLP().eval(), "o3", "frame_averaging")
    clouds = torch.randn(4, 6, 3)
    assert _breaks(model, clouds) > 0
    _compiled_matches_eager(model, clouds)


@pytest.mark.parametrize("method", ["group_averaging", "lambda_equitune"])
def test_compiled_under_autocast_matches_eager_autocast(method: str, images: Tensor) -> None:
    """λ-equitune: the λ-net (folded layer norm when compiled) runs with autocast off inside the compiled graph."""
    model = _trained_lambda(images) if method == "lambda_equitune" else symwrap.wrap(SmallCNN().eval(), "d4")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _breaks(model, images) == 0
        _compiled_matches_eager(model, images, backend="eager", atol=1e-6)


@pytest.mark.slow
def test_inductor_compiled_matches_eager(images: Tensor) -> None:
    model = symwrap.wrap(SmallCNN().eval(), "d4", chunk_size=12)
    _compiled_matches_eager(model, images, backend="inductor")


@pytest.mark.slow
def test_inductor_compiled_lambda_equitune_matches_eager(images: Tensor) -> None:
    _compiled_matches_eager(_trained_lambda(images, chunk_size=12), images, backend="inductor")


def test_looking_up_forward_inside_a_compiled_function_has_no_graph_break(images: Tensor) -> None:
    # wrapped.forward is a descriptor (it shows the base model's signature); traced, it must bind without a break
    model = symwrap.wrap(SmallCNN().eval(), "d4", chunk_size=None)

    def call(x: Tensor) -> Tensor:
        return model.forward(x)

    counters.clear()
    with torch.no_grad():
        out = torch.compile(call, backend="eager")(images)
        binding = [reason for reason in counters["graph_break"] if "<class 'method'>" in reason]
        assert binding == [], "binding wrapped.forward broke the graph"
        torch.testing.assert_close(out, model(images), rtol=1e-5, atol=1e-5)
