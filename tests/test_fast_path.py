"""The steady-state fast path (symwrap.fast_path): taken only where it repeats the general path, with its result."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

import symwrap
from symwrap.canonicalizers import LearnedCanonicalizer
from symwrap.errors import InputLayoutError
from symwrap.fast_path import FastPath
from symwrap.frames.base import DegenerateFrameWarning, DegenerateInputError
from symwrap.groups.matrix import haar_orthogonal
from tests.conftest import DenseCNN, PointMLP, SmallCNN
from tests.test_frame_averaging import SetMLP


def d4_images(x: Tensor) -> list[Tensor]:
    rotations = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=[-1]) for r in rotations]


def fast_path_of(wrapped: symwrap.SymmetrizedModel, x: Tensor) -> FastPath | None:
    return wrapped.engine.fast_paths.get((x.shape, x.dtype, x.device))


class TupleThenTensor(nn.Module):
    """Returns a tensor, and a tuple once ``tuple_output`` is set (an output type the fast path does not know)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN(8)
        self.tuple_output = False

    def forward(self, x: Tensor) -> Any:
        y = self.net(x)
        return (y, y.sum(-1)) if self.tuple_output else y


STATIC_METHODS = [
    ("group_averaging", {}),
    ("equizero", {}),
    ("frame_averaging", {}),
    ("monte_carlo", {"samples": 5, "seed": 3}),
    ("lambda_equitune", {"features": "features"}),
]


@pytest.mark.parametrize(("method", "options"), STATIC_METHODS)
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_path_is_taken_and_repeats_the_general_result_exactly(method: str, options: dict, batch: int) -> None:
    model = SmallCNN(8).eval()
    x = torch.randn(batch, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", method, chunk_size=None, **options).eval()
    with torch.no_grad():
        general = wrapped(x)  # the first call of a layout takes the general path and learns the fast one
        assert isinstance(fast_path_of(wrapped, x), FastPath)
        fast = wrapped(x)
    assert_close(fast, general, rtol=0, atol=0)


@pytest.mark.parametrize(("method", "options"), [*STATIC_METHODS[:3], STATIC_METHODS[4]])
def test_fast_path_stays_exactly_invariant_on_a_non_invariant_model(method: str, options: dict) -> None:
    model = SmallCNN(8).eval()
    x = torch.randn(2, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", method, chunk_size=None, **options).eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(torch.rot90(x, 1, (-2, -1))), atol=1e-3)
        reference = wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        for moved in d4_images(x)[1:]:
            assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


def test_fast_path_with_shifts_and_probs_matches_the_general_path() -> None:
    model = SmallCNN(8).eval()
    x = torch.randn(2, 3, 8, 8)
    wrapped = symwrap.wrap(model, "shift", chunk_size=None, reduce="probs", group_options={"stride": 4}).eval()
    with torch.no_grad():
        general = wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        assert_close(wrapped(x), general, rtol=0, atol=0)
        assert_close(wrapped(torch.roll(x, (4, 4), dims=(-2, -1))), general, rtol=1e-5, atol=1e-6)


def test_fast_path_gradients_match_the_general_path() -> None:
    model = SmallCNN(8)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    wrapped = symwrap.wrap(model, "d4", chunk_size=None)
    wrapped(x).square().sum().backward()  # general
    general_x, general_w = x.grad.clone(), model.head.weight.grad.clone()
    x.grad, model.head.weight.grad = None, None
    assert fast_path_of(wrapped, x) is not None
    wrapped(x).square().sum().backward()  # fast
    assert_close(x.grad, general_x, rtol=1e-6, atol=1e-7)
    assert_close(model.head.weight.grad, general_w, rtol=1e-6, atol=1e-7)


def test_equizero_straight_through_training_matches_on_the_fast_path() -> None:
    model = SmallCNN(8)
    x = torch.randn(3, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", "equizero", chunk_size=None, straight_through=True).train()
    general = wrapped(x)
    general.sum().backward()
    general_grad = model.head.bias.grad.clone()
    model.head.bias.grad = None
    assert fast_path_of(wrapped, x) is not None
    fast = wrapped(x)
    fast.sum().backward()
    assert_close(fast, general, rtol=0, atol=0)
    assert_close(model.head.bias.grad, general_grad, rtol=1e-6, atol=1e-7)


def train_lambda_net_a_step(wrapped: symwrap.SymmetrizedModel, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    out = wrapped(x)
    net = wrapped.method.lambda_net
    net.zero_grad()
    out.logsumexp(-1).sum().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("use_feature_model", [False, True])
def test_lambda_net_gradients_match_on_the_fast_path(use_feature_model: bool) -> None:
    model = SmallCNN(8)
    x = torch.randn(3, 3, 8, 8)
    if use_feature_model:
        options: dict[str, Any] = {"feature_model": nn.Sequential(nn.Flatten(), nn.Linear(192, 6))}
    else:
        options = {"features": "features"}
    wrapped = symwrap.wrap(model, "d4", "lambda_equitune", chunk_size=None, example_input=x[:1], **options).train()
    general, general_grads = train_lambda_net_a_step(wrapped, x)  # learns the fast path
    assert isinstance(fast_path_of(wrapped, x), FastPath)
    with torch.no_grad():  # a non-trivial λ-net: the last layer starts at zero (plain group averaging)
        for p in wrapped.method.lambda_net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    wrapped.engine.use_fast_path = False
    general, general_grads = train_lambda_net_a_step(wrapped, x)
    wrapped.engine.use_fast_path = True
    fast, fast_grads = train_lambda_net_a_step(wrapped, x)
    assert_close(fast, general, rtol=0, atol=0)
    for got, expected in zip(fast_grads, general_grads):
        assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("positive", ["softplus", "exp"])
@pytest.mark.parametrize(
    ("group", "group_options", "size"),
    [("d4", {}, 8), ("shift", {"stride": 2}, 6)],  # 8 copies (a power of two: no prior multiply), and 9 copies
    ids=["d4", "shift-9"],
)
def test_a_trained_lambda_net_gives_the_general_result_exactly_on_its_lean_fast_call(
    group: str, group_options: dict, size: int, positive: str
) -> None:
    model = SmallCNN(size).eval()
    x = torch.randn(3, 3, size, size)
    wrapped = symwrap.wrap(
        model,
        group,
        "lambda_equitune",
        chunk_size=None,
        group_options=group_options,
        features="features",
        positive=positive,
        example_input=x[:1],
    ).eval()
    with torch.no_grad():
        for p in wrapped.method.lambda_net.parameters():  # a λ that differs from copy to copy
            p.add_(0.5 * torch.randn_like(p))
        wrapped.engine.use_fast_path = False
        general = wrapped(x)
        wrapped.engine.use_fast_path = True
        wrapped(x)  # learns the fast path
        assert fast_path_of(wrapped, x).lean_forward is not None
        fast = wrapped(x)
        moved = wrapped(torch.roll(x, (2, 4), dims=(-2, -1)) if group == "shift" else torch.rot90(x, 1, (-2, -1)))
    assert_close(fast, general, rtol=0, atol=0)
    assert_close(moved, general, rtol=1e-5, atol=1e-5)  # and exactly invariant, up to float rounding


def test_the_lean_lambda_call_names_a_feature_width_the_lambda_net_was_not_built_for() -> None:
    model = SmallCNN(8).eval()
    x = torch.randn(2, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", "lambda_equitune", chunk_size=None, features="features").eval()
    with torch.no_grad():
        wrapped(x)
        assert fast_path_of(wrapped, x).lean_forward is not None
        model.features[2] = nn.Conv2d(8, 4, 3, stride=2, padding=1)  # the features are now 4 channels wide, not 8
        model.head = nn.Linear(4 * 16, 5)
        with pytest.raises(symwrap.IncompatibleModelError, match="built for 8 features but the model gave 4"):
            wrapped(x)


class EquivariantNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: symwrap.wrap(EquivariantNet(), "d4", output="equivariant", reduce="log_probs", class_dim=1),
            id="equivariant-output-pulled-back-by-gather",  # log_probs: no slot-by-slot pull-back
        ),
        pytest.param(lambda: symwrap.wrap(SmallCNN(8), "d4", "monte_carlo", samples=3), id="unseeded-draw"),
        pytest.param(
            lambda: symwrap.wrap(SmallCNN(8), "d4", "lambda_equitune", features="features", chunk_size=4),
            id="features-in-chunks",
        ),
        pytest.param(
            lambda: symwrap.wrap(SmallCNN(8), "d4", "monte_carlo", samples=3, seed=0, return_stderr=True),
            id="standard-errors",
        ),
    ],
)
def test_calls_the_fast_path_cannot_repeat_keep_the_general_path(make: Any) -> None:
    wrapped = make().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        first = wrapped(x)
        assert fast_path_of(wrapped, x) is None
        second = wrapped(x)
    if isinstance(first, Tensor) and wrapped.method.name != "monte_carlo":  # an unseeded draw differs per call
        assert_close(second, first)


class RowCounting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        return self.model(x)


CHUNKED = [
    pytest.param(lambda: SmallCNN(8), "d4", "group_averaging", 4, (2, 3, 8, 8), [4, 4, 4, 4], id="d4-GA"),
    pytest.param(lambda: SmallCNN(8), "d4", "equizero", 5, (2, 3, 8, 8), [5, 5, 5, 1], id="d4-equizero"),
    pytest.param(PointMLP, "o3", "frame_averaging", 3, (3, 6, 3), [3] * 8, id="o3-frames"),
    pytest.param(lambda: SmallCNN(8), "d4", "canonicalization", 1, (2, 3, 8, 8), [1, 1], id="d4-learned-canon"),
]


@pytest.mark.parametrize(("make", "group", "method", "chunk", "shape", "forwards"), CHUNKED)
def test_an_orbit_split_into_chunks_runs_them_on_the_fast_path_with_the_general_result(
    make: Any, group: str, method: str, chunk: int, shape: tuple[int, ...], forwards: list[int]
) -> None:
    torch.manual_seed(0)
    model = RowCounting(make()).eval()
    fast, general = _fast_and_general(lambda: symwrap.wrap(model, group, method, chunk_size=chunk))
    x = _clouds(shape[0]) if group == "o3" else torch.randn(shape)
    with torch.no_grad():
        fast(x)  # the general path, which learns the fast one
        path = fast_path_of(fast, x)
        assert isinstance(path, FastPath) and path.chunk == chunk
        model.rows.clear()
        got = fast(x)
        assert model.rows == forwards, "the settled rows per forward"
        assert_close(got, general(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("threshold", "value"),
    [("KEEP_BYTES", 16 * 5 * 4 - 1), ("MOVE_AT_ONCE_BYTES", 16 * 3 * 8 * 8 * 4 - 1)],  # one byte short of the orbit's
    ids=["outputs", "copies"],
)
def test_an_orbit_too_large_to_keep_in_chunks_keeps_the_general_path(
    monkeypatch: pytest.MonkeyPatch, threshold: str, value: int
) -> None:
    import symwrap.engine as engine

    monkeypatch.setattr(engine, threshold, value)
    wrapped = symwrap.wrap(SmallCNN(8), "d4", chunk_size=4).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        wrapped(x)
    assert fast_path_of(wrapped, x) is None, "the general path moves and sums such orbits chunk by chunk"


@pytest.mark.parametrize("reduce", ["logits", "probs", "max", "gmean"])
@pytest.mark.parametrize(("batch", "chunk"), [(1, None), (1, 1), (2, 4)], ids=["B1-whole", "B1-loop", "B2-chunks"])
def test_a_dense_equivariant_output_runs_on_the_fast_path_with_the_general_result(
    reduce: str, batch: int, chunk: int | None
) -> None:
    fast, general = _fast_and_general(
        lambda: symwrap.wrap(DenseCNN(8), "d4", output="equivariant", reduce=reduce, class_dim=1, chunk_size=chunk)
    )
    x = torch.randn(batch, 3, 8, 8)
    with torch.no_grad():
        fast(x)  # the general path, which learns the fast one
        path = fast_path_of(fast, x)
        assert isinstance(path, FastPath) and path.dense is not None and path.chunk == chunk
        assert_close(fast(x), general(x), rtol=0, atol=0)
        for moved, expected in zip(d4_images(x)[1:], d4_images(general(x))[1:]):
            assert_close(fast(moved), expected, rtol=1e-5, atol=1e-5)  # equivariant on the fast path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, expected = fast(x), general(x)
    assert got.dtype == expected.dtype == torch.float32
    assert_close(got, expected, rtol=0, atol=0)


def test_keyword_calls_take_the_general_path() -> None:
    model = SmallCNN(8).eval()
    wrapped = symwrap.wrap(model, "d4", chunk_size=None).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        by_keyword = wrapped(x=x)
        assert wrapped.engine.fast_paths == {}, "a keyword call learns nothing"
        assert_close(wrapped(x), by_keyword, rtol=0, atol=0)


@pytest.mark.parametrize(("method", "options"), [STATIC_METHODS[0], STATIC_METHODS[1], STATIC_METHODS[4]])
def test_under_autocast_the_fast_path_keeps_the_precision_policy(method: str, options: dict) -> None:
    model = SmallCNN(8).eval()
    fast = symwrap.wrap(model, "d4", method, chunk_size=None, **options).eval()
    general = symwrap.wrap(model, "d4", method, chunk_size=None, **options).eval()
    general.engine.use_fast_path = False
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        general.method.load_state_dict(fast.method.state_dict())
        first = fast(x)  # general path, learns the fast one (under autocast too)
        if method == "lambda_equitune":  # the λ-nets are built on the first call: give both the same weights
            general(x)
            general.method.load_state_dict(fast.method.state_dict())
        assert isinstance(fast_path_of(fast, x), FastPath)
        got, expected = fast(x), general(x)
    assert got.dtype == expected.dtype == first.dtype == torch.float32
    assert_close(got, expected, rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for moved in d4_images(x)[1:]:
            assert_close(fast(moved), got, rtol=1e-6, atol=1e-6)


def test_a_model_whose_output_type_changes_falls_back_to_the_general_path() -> None:
    model = TupleThenTensor().eval()
    wrapped = symwrap.wrap(model, "d4", chunk_size=None).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        single = wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        model.tuple_output = True
        out = wrapped(x)
        assert isinstance(out, tuple) and len(out) == 2  # the general path's structured output
        assert wrapped.engine.fast_paths[(x.shape, x.dtype, x.device)] is None  # not tried again for this layout
        assert_close(out[0], single, rtol=1e-6, atol=1e-6)
        moved = wrapped(torch.rot90(x, 1, (-2, -1)))
        assert_close(moved[0], out[0], rtol=1e-5, atol=1e-5)
        assert_close(moved[1], out[1], rtol=1e-5, atol=1e-5)


def test_changing_chunking_or_the_method_forgets_the_fast_paths() -> None:
    wrapped = symwrap.wrap(SmallCNN(8), "d4", chunk_size=None).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        wrapped.engine.chunk_size = 4
        assert wrapped.engine.fast_paths == {}
        wrapped(x)
        assert fast_path_of(wrapped, x).chunk == 4, "4 rows per forward: the orbit of 16 rows is split"
        wrapped.engine.chunk_size = None
        wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        wrapped.method = symwrap.get_method("equizero")
        assert wrapped.engine.fast_paths == {}


def test_a_new_input_shape_learns_its_own_fast_path() -> None:
    wrapped = symwrap.wrap(SmallCNN(8), "d4", chunk_size=None).eval()
    with torch.no_grad():
        for batch in (1, 2, 1):
            x = torch.randn(batch, 3, 8, 8)
            reference = wrapped(x)
            assert_close(wrapped(torch.rot90(x, 1, (-2, -1))), reference, rtol=1e-5, atol=1e-5)
    assert len(wrapped.engine.fast_paths) == 2


def test_out_of_memory_on_the_fast_path_retries_on_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SmallCNN(8).eval()
    wrapped = symwrap.wrap(model, "d4", chunk_size=None).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = wrapped(x)
        assert fast_path_of(wrapped, x) is not None
        original = model.forward
        calls = {"n": 0}

        def fails_once(inputs: Tensor) -> Tensor:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
            return original(inputs)

        monkeypatch.setattr(model, "forward", fails_once)
        out = wrapped(x)
    assert calls["n"] == 2, "the fast forward failed once, then the general path ran"
    assert_close(out, reference, rtol=1e-6, atol=1e-6)
    assert fast_path_of(wrapped, x) is not None, "forgotten after the failure, then learned again"


def test_use_fast_path_false_keeps_every_call_on_the_general_path() -> None:
    wrapped = symwrap.wrap(SmallCNN(8), "d4", chunk_size=None).eval()
    wrapped.engine.use_fast_path = False
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        first, second = wrapped(x), wrapped(x)
    assert wrapped.engine.fast_paths == {}
    assert_close(second, first, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- plans made from the input
def _clouds(batch: int) -> Tensor:
    """Anisotropic, skewed clouds (distinct PCA axes, a clear third moment): generic for PCA frames and poses."""
    torch.manual_seed(4)
    return torch.randn(batch, 6, 3).exp() * torch.tensor([3.0, 2.0, 1.0])


def _rotated(x: Tensor) -> Tensor:
    rotation = haar_orthogonal(1, 3, special=False, generator=torch.Generator().manual_seed(5))[0].float()
    return x @ rotation.T


def _moved_rigidly(x: Tensor) -> Tensor:
    rotation = haar_orthogonal(1, 3, special=True, generator=torch.Generator().manual_seed(5))[0].float()
    return x @ rotation.T + torch.tensor([2.0, -1.0, 0.5])


def _permuted(x: Tensor) -> Tensor:
    return x[:, torch.tensor([3, 0, 5, 1, 4, 2])]


def _planned(model: Any, group: str, method: str, inputs: Any, move: Any, tol: float) -> Any:
    return pytest.param(lambda: symwrap.wrap(model(), group, method), inputs, move, tol, id=f"{group}-{method}")


def _sets(batch: int) -> Tensor:
    return torch.randn(batch, 6, 3)


def _images(batch: int) -> Tensor:
    return torch.randn(batch, 3, 8, 8)


def _turned(x: Tensor) -> Tensor:
    return torch.rot90(x, 1, (-2, -1)).flip(-1)


def _fast_and_general(make: Any) -> tuple[symwrap.SymmetrizedModel, symwrap.SymmetrizedModel]:
    """Two equal wrapped models in eval mode; the second keeps every call on the general path."""
    torch.manual_seed(0)
    fast, general = make().eval(), make().eval()
    general.load_state_dict(fast.state_dict())
    general.engine.use_fast_path = False
    return fast, general


PLANNED = [
    _planned(PointMLP, "o3", "frame_averaging", _clouds, _rotated, 1e-4),
    _planned(PointMLP, "o3", "canonicalization", _clouds, _rotated, 1e-4),
    _planned(PointMLP, "e3", "frame_averaging", _clouds, _moved_rigidly, 1e-4),  # homogeneous codes: a translation
    _planned(PointMLP, "se3", "canonicalization", _clouds, _moved_rigidly, 1e-4),
    _planned(SetMLP, "perm", "frame_averaging", _sets, _permuted, 1e-6),
    _planned(SetMLP, "perm", "canonicalization", _sets, _permuted, 1e-6),
    _planned(lambda: SmallCNN(8), "d4", "canonicalization", _images, _turned, 1e-6),  # the learned canonicalizer
]


@pytest.mark.parametrize(("make", "inputs", "move", "tol"), PLANNED)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_plan_made_from_the_input_runs_on_the_fast_path_with_the_general_result(
    make: Any, inputs: Any, move: Any, tol: float, batch: int
) -> None:
    fast, general = _fast_and_general(make)
    x = inputs(batch)
    with torch.no_grad():
        fast(x)  # the general path, which learns the fast one
        general(x)  # a first call measures memory in a first chunk of B rows: the next ones run the whole orbit
        path = fast_path_of(fast, x)
        assert isinstance(path, FastPath) and path.planner is not None
        for value in (x, move(x)):
            assert_close(fast(value), general(value), rtol=0, atol=0)
        assert_close(fast(move(x)), fast(x), rtol=tol, atol=tol)  # invariant on the fast path
    assert fast_path_of(fast, x) is path


def test_a_fresh_plan_with_more_copies_runs_on_the_general_path_planned_once() -> None:
    fast, general = _fast_and_general(lambda: symwrap.wrap(PointMLP(), "o3", "frame_averaging"))
    x = _clouds(2)
    degenerate = x.clone()
    degenerate[1] = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 2], [0, 0, -2]])  # λ1 = λ2
    with torch.no_grad():
        fast(x)
        assert fast_path_of(fast, x).planner is not None
        with pytest.warns(DegenerateFrameWarning) as caught:
            out = fast(degenerate)  # 8 × 16 copies for the enlarged frame of cloud 1: not the layout's 8
        assert len([w for w in caught if issubclass(w.category, DegenerateFrameWarning)]) == 1, "planned once"
        with pytest.warns(DegenerateFrameWarning):
            assert_close(out, general(degenerate), rtol=0, atol=0)
        assert fast_path_of(fast, x).planner is not None, "the layout keeps its fast path"
        assert_close(fast(x), general(x), rtol=0, atol=0)


def test_a_learned_canonicalizer_trains_off_the_fast_path_and_infers_on_it() -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(SmallCNN(8), "d4", "canonicalization").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        wrapped(x)
    assert fast_path_of(wrapped, x).copies == 1
    wrapped.train()
    assert wrapped.engine.fast_paths == {}, "the mode changes how many copies a plan has"
    wrapped(x).square().sum().backward()  # all |G| copies, straight-through weights
    grads = [p.grad for p in wrapped.method.canonicalizer.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    wrapped.eval()
    with torch.no_grad():
        expected = wrapped(x)
        assert fast_path_of(wrapped, x).copies == 1
        assert_close(wrapped(torch.rot90(x, 1, (-2, -1))), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("group", "size"), [("rot90", 8), ("flip", 8), ("d4", 8), ("d4", 40)])  # 40: downscaled
@pytest.mark.parametrize("batch", [1, 5])
def test_a_learned_canonicalizer_moves_by_table_on_the_fast_path_as_the_general_path(
    group: str, size: int, batch: int
) -> None:
    fast, general = _fast_and_general(lambda: symwrap.wrap(SmallCNN(size), group, "canonicalization"))
    torch.manual_seed(6)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        fast(x)
        general(x)
        assert fast_path_of(fast, x).lean is not None
        for value in (x, torch.rot90(x, 1, (-2, -1)), x.flip(-1), torch.randn(batch, 3, size, size)):
            assert_close(fast(value), general(value), rtol=0, atol=0)
        fast.method.canonicalizer = general.method.canonicalizer = LearnedCanonicalizer(3)  # a new one is used
        assert_close(fast(x), general(x), rtol=0, atol=0)


def test_a_lean_move_gives_way_when_only_the_method_is_switched_to_training() -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(SmallCNN(8), "d4", "canonicalization").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        wrapped(x)
    assert fast_path_of(wrapped, x).lean is not None
    wrapped.method.train()  # not through wrapped.train(): the fast path is kept, its lean move must not apply
    wrapped(x).square().sum().backward()  # all |G| copies with straight-through weights, planned afresh
    assert all(p.grad is not None for p in wrapped.method.canonicalizer.parameters())


@pytest.mark.parametrize("learned_under_autocast", [True, False])
def test_a_lambda_fast_path_runs_each_call_in_that_call_s_precision(learned_under_autocast: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)

    def make() -> symwrap.SymmetrizedModel:
        return symwrap.wrap(SmallCNN(8), "d4", "lambda_equitune", features="features", example_input=x[:1])

    fast, general = _fast_and_general(make)
    with torch.no_grad():
        for p in fast.method.lambda_net.parameters():
            p.add_(0.5 * torch.randn_like(p))
        general.load_state_dict(fast.state_dict())
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
        with bf16 if learned_under_autocast else contextlib.nullcontext():
            fast(x)  # the general path, which learns the fast one from this call
        assert fast_path_of(fast, x) is not None
        assert_close(fast(x), general(x), rtol=0, atol=0)  # without autocast: a float32 forward
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert_close(fast(x), general(x), rtol=0, atol=0)  # with it: a bfloat16 forward


def test_under_autocast_a_planned_fast_path_keeps_the_precision_policy() -> None:
    fast, general = _fast_and_general(lambda: symwrap.wrap(PointMLP(), "o3", "canonicalization"))
    x = _clouds(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x)
        assert fast_path_of(fast, x).planner is not None
        got, expected = fast(x), general(x)
    assert got.dtype == expected.dtype == torch.float32
    assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("group", ["o3", "so3", "e3", "se3"])
def test_a_pca_pose_moves_clear_clouds_on_its_lean_path_with_the_general_result(group: str) -> None:
    fast, general = _fast_and_general(lambda: symwrap.wrap(PointMLP(), group, "canonicalization"))
    x = _clouds(3)
    with torch.no_grad():
        fast(x)
        lean = fast_path_of(fast, x).lean
        assert lean is not None
        for value in (x, _moved_rigidly(x), _clouds(3) * 1e-15):
            rows = lean(value)
            assert rows is not None, "clear clouds take the lean pose, not the general plan"
            assert_close(fast(value), general(value), rtol=0, atol=0)


def test_a_pca_pose_fast_path_still_warns_about_a_degenerate_cloud_and_refuses_a_nan() -> None:
    fast, general = _fast_and_general(lambda: symwrap.wrap(PointMLP(), "o3", "canonicalization"))
    x = _clouds(2)
    degenerate = x.clone()
    degenerate[1] = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 2], [0, 0, -2]])  # λ1 = λ2
    broken = x.clone()
    broken[0, 2, 1] = float("nan")
    with torch.no_grad():
        fast(x)
        assert fast_path_of(fast, x).lean is not None
        with pytest.warns(DegenerateFrameWarning):
            out = fast(degenerate)
        with pytest.warns(DegenerateFrameWarning):
            assert_close(out, general(degenerate), rtol=0, atol=0)
        with pytest.raises(InputLayoutError, match=r"point cloud 0 has a NaN or inf coordinate \(point 2\)"):
            fast(broken)
        assert_close(fast(x), general(x), rtol=0, atol=0)


def test_a_pca_pose_fast_path_reads_the_gap_option_as_the_general_plan_does() -> None:
    wrapped = symwrap.wrap(PointMLP(), "o3", "canonicalization", degenerate="error").eval()
    x = _clouds(2)
    with torch.no_grad():
        wrapped(x)
        assert fast_path_of(wrapped, x).lean is not None
        wrapped.method.options.gap = 0.9  # every cloud is degenerate at this gap
        with pytest.raises(DegenerateInputError):
            wrapped(x)


# ------------------------------------------------------------------------------ calls under torch.inference_mode
INFERENCE_THEN_TRAINING = [
    pytest.param(lambda: symwrap.wrap(SmallCNN(8), "d4", chunk_size=None), _images, id="fast-path"),
    pytest.param(lambda: symwrap.wrap(SmallCNN(8), "d4", chunk_size=3), _images, id="chunked"),
    pytest.param(lambda: symwrap.wrap(PointMLP(), "o3", "frame_averaging"), _clouds, id="point-frames"),
    pytest.param(lambda: symwrap.wrap(SmallCNN(8), "d4", "canonicalization"), _images, id="learned-canonicalizer"),
    pytest.param(
        lambda: symwrap.wrap(SmallCNN(8), "d4", "lambda_equitune", features="features"), _images, id="lambda-net"
    ),
]


@pytest.mark.parametrize(("make", "inputs"), INFERENCE_THEN_TRAINING)
def test_calls_under_inference_mode_leave_nothing_that_breaks_a_later_backward(make: Any, inputs: Any) -> None:
    # symwrap keeps plans, indices and weights from call to call; made under inference_mode they could not be saved
    # for a later backward ("Inference tensors cannot be saved for backward")
    fast, reference = _fast_and_general(make)
    x = inputs(2)
    with torch.no_grad():
        reference(x)  # a first call measures memory in a first chunk of B rows: the next ones run the whole orbit
    with torch.inference_mode():
        fast(x)
        in_inference = fast(x)
    with torch.no_grad():
        assert_close(in_inference, reference(x), rtol=0, atol=0)
    fast.train()
    y = x.clone().requires_grad_(True)
    fast(y).square().sum().backward()
    fast(y).square().sum().backward()  # the kept state of the training call too
    assert y.grad is not None and y.grad.abs().sum() > 0
