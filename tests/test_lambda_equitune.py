"""λ-equitune: constant λ is group averaging, a trained λ stays exactly invariant/equivariant, training setup."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.adapters.torch import TorchAdapter
from symwrap.errors import ConfigError, IncompatibleModelError
from symwrap.methods.base import Plan
from symwrap.methods.lambda_equitune import LambdaEquitune
from tests.conftest import DenseCNN, SmallCNN

EXACT_IMAGE_GROUPS = ["rot90", "rot180", "flip", "vflip", "d4", "c2", "c4", "d2"]


def _moved(group: symwrap.groups.Group, x: torch.Tensor) -> list[torch.Tensor]:
    """``g·x`` for every element, each ``(B, ...)``."""
    action = group.default_action()
    batch = x.shape[0]
    return [action.apply(x, torch.arange(batch), g.expand(batch, *g.shape), group) for g in group.elements()]


def _randomize(method: LambdaEquitune, scale: float = 0.5) -> None:
    """Stand-in for training: random weights everywhere, so λ differs strongly between copies."""
    assert method.lambda_net is not None
    with torch.no_grad():
        for p in method.lambda_net.parameters():
            p.copy_(torch.randn_like(p) * scale)


def _reweighings(wrapped: symwrap.SymmetrizedModel, x: torch.Tensor) -> list[tuple[torch.Size, torch.Tensor]]:
    """Call ``wrapped(x)``; for each reweighing of the call, the shape of the per-copy features it received and
    the normalised λ weights ``(B, k)`` it gave."""
    calls = []
    original = wrapped.method.reweigh

    def spy(plan, values, features, class_dim=-1):
        result = original(plan, values, features, class_dim)
        calls.append((features.shape, result.weights))
        return result

    wrapped.method.reweigh = spy
    wrapped.engine.use_fast_path = False  # the general path: the fast one's lean call computes the weights inline
    try:
        wrapped(x)
    finally:
        del wrapped.method.reweigh
        wrapped.engine.use_fast_path = True
    return calls


def _weights(wrapped: symwrap.SymmetrizedModel, x: torch.Tensor) -> torch.Tensor:
    """The normalised λ weights ``(B, k)`` the method gives the copies of ``x``."""
    return _reweighings(wrapped, x)[-1][1]


@pytest.mark.parametrize("positive", ["softplus", "exp"])
@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_constant_lambda_equals_group_averaging(name: str, positive: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    # example_input builds the λ-net at wrap time; its last layer starts at zero, so λ is constant
    wrapped = symwrap.wrap(cnn, name, "lambda_equitune", features="features", positive=positive, example_input=images)
    with torch.no_grad():
        wrapped.method.lambda_net.mlp[-1].bias.fill_(2.7)  # any constant λ, not just the initial one
    reference = symwrap.wrap(cnn, name, "group_averaging")(images)
    assert_close(wrapped(images), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("positive", ["softplus", "exp"])
@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_trained_lambda_is_exactly_invariant(name: str, positive: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group(name)
    wrapped = symwrap.wrap(cnn, name, "lambda_equitune", features="features", positive=positive).eval()
    wrapped(images)
    _randomize(wrapped.method)
    weights = _weights(wrapped, images)
    assert (weights.amax(1) - weights.amin(1)).min() > 0.01, "λ must really differ between the copies"
    assert (wrapped(images) - symwrap.wrap(cnn, name)(images)).abs().max() > 1e-3, "and differ from plain GA"
    reference = wrapped(images)
    for moved in _moved(group, images):
        assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_trained_lambda_is_exactly_equivariant_for_dense_outputs(
    name: str, dense_cnn: DenseCNN, images: torch.Tensor
) -> None:
    group = symwrap.get_group(name)
    wrapped = symwrap.wrap(dense_cnn, name, "lambda_equitune", output="equivariant", features="conv1").eval()
    wrapped(images)
    _randomize(wrapped.method)
    reference = wrapped(images)
    for moved_x, moved_y in zip(_moved(group, images), _moved(group, reference)):
        assert_close(wrapped(moved_x), moved_y, rtol=1e-5, atol=1e-5)


def test_chunking_gives_equal_results(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "d4", "lambda_equitune", features="features", chunk_size=None).eval()
    wrapped(images)
    _randomize(wrapped.method)
    reference = wrapped(images)
    for chunk_size in (1, 5, 8, "auto"):
        wrapped.engine.chunk_size = chunk_size
        assert_close(wrapped(images), reference, rtol=1e-6, atol=1e-6)


def test_chunks_keep_one_score_per_copy_not_the_features(cnn: SmallCNN, images: torch.Tensor) -> None:
    """The λ-net scores each chunk's rows as the forward makes them: only ``(R, 1)`` scores reach the reweighing,
    never the whole orbit's ``(R, D)`` features."""
    wrapped = symwrap.wrap(cnn, "d4", "lambda_equitune", features="features", chunk_size=5).eval()
    wrapped(images)
    _randomize(wrapped.method)
    assert [shape for shape, _ in _reweighings(wrapped, images)] == [torch.Size([len(images), 8, 1])]


@pytest.mark.parametrize("hidden", [(), (16,), (16, 8)])
@pytest.mark.parametrize("training", [False, True])
def test_lambda_net_applies_its_layers_as_the_sequential_would(hidden: tuple[int, ...], training: bool) -> None:
    """The λ-net calls its layers' weights functionally (one module call): the same numbers as running ``mlp``,
    dropout included in train mode (same random stream), and a hook on the λ-net sees every call."""
    from symwrap.methods.lambda_equitune import LambdaNet

    torch.manual_seed(0)
    net = LambdaNet(12, hidden, dropout=0.5, feature_norm=True).train(training)
    for p in net.parameters():
        torch.nn.init.normal_(p)
    features = torch.randn(5, 3, 12)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(1)
    direct = net(features)
    torch.manual_seed(1)
    sequential = net.mlp(nn.functional.layer_norm(features, (12,))).squeeze(-1)
    assert direct.shape == (5, 3) and calls == [1]
    assert_close(direct, sequential, rtol=0, atol=0)
    if training and hidden:
        torch.manual_seed(2)
        assert not torch.equal(net(features), direct), "dropout is active in train mode"


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_folded_layer_norm_of_the_compiled_lambda_net_matches_the_plain_form(
    dtype: torch.dtype, tolerance: float
) -> None:
    """Compiled, the λ-net moves its layer norm past the first matmul; features with a mean 10 standard
    deviations from zero (the cancellation this form is exposed to) give the plain form's result."""
    from symwrap.methods.lambda_equitune import _layer_norm_then_linear

    torch.manual_seed(0)
    layer = nn.Linear(64, 16).to(dtype)
    features = (torch.randn(32, 64) * 0.5 + 5.0).to(dtype)
    plain = layer(nn.functional.layer_norm(features, (64,)))
    folded = _layer_norm_then_linear(features, layer)
    assert_close(folded, plain, rtol=tolerance, atol=tolerance)
    assert not torch.allclose(plain, layer(features), rtol=0.1, atol=0.1), "the normalisation matters here"


def test_feature_model_gives_lambda_features_and_stays_frozen(cnn: SmallCNN, images: torch.Tensor) -> None:
    feature_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5))  # pooled over H, W
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", feature_model=feature_model, example_input=images[:2])
    wrapped.train()
    wrapped(images)
    _randomize(wrapped.method)
    assert not feature_model.training, "the frozen feature model stays in eval mode (no dropout)"
    assert all(not p.requires_grad for p in feature_model.parameters())
    wrapped.eval()
    reference = wrapped(images)
    for moved in _moved(symwrap.get_group("rot90"), images):
        assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


def test_torch_adapter_features_option(cnn: SmallCNN, images: torch.Tensor) -> None:
    adapter = TorchAdapter(cnn, features="features")
    a = symwrap.wrap(cnn, "rot90", "lambda_equitune", adapter=adapter).eval()
    b = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features").eval()
    a(images), b(images)
    b.method.load_state_dict(a.method.state_dict())
    _randomize(a.method)
    b.method.load_state_dict(a.method.state_dict())
    features, _ = adapter.features_and_output(adapter.bind((images,), {}), [images], torch.arange(3))
    assert features.shape == (3, 8)  # (B, 8, 8, 8) feature maps mean-pooled over H, W
    assert_close(a(images), b(images))


@pytest.mark.parametrize("through", ["method", "adapter"])
def test_unwrap_removes_the_features_hook(through: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    # features= captures the submodule's output with a forward hook registered once (compile-friendly);
    # unwrap() must hand back the user's model without it, and the wrapper must still work afterwards.
    if through == "adapter":
        wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", adapter=TorchAdapter(cnn, features="features"))
    else:
        wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    wrapped.eval()
    before = wrapped(images)
    submodule = cnn.get_submodule("features")
    assert len(submodule._forward_hooks) == 1
    assert wrapped.unwrap() is cnn
    assert len(submodule._forward_hooks) == 0
    assert_close(wrapped(images), before)


def test_only_the_lambda_net_trains_and_modes_follow_the_wrapper(images: torch.Tensor) -> None:
    base = SmallCNN().train()
    wrapped = symwrap.wrap(base, "rot90", "lambda_equitune", features="features", dropout=0.5, example_input=images)
    assert not base.training and all(not p.requires_grad for p in base.parameters())
    wrapped(images)
    wrapped.train()
    assert wrapped.method.lambda_net.training and not base.training, "base stays in eval mode when training λ"
    _randomize(wrapped.method, 0.3)
    loss = wrapped(images).logsumexp(-1).sum()
    loss.backward()
    grads = [p.grad for p in wrapped.method.lambda_net.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in base.parameters())
    wrapped.eval()
    assert not wrapped.method.lambda_net.training, "no dropout at evaluation"
    assert_close(wrapped(images), wrapped(images), rtol=0, atol=0)


@pytest.mark.parametrize("positive", ["softplus", "exp"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_are_positive_and_finite_in_half_precision(positive: str, dtype: torch.dtype) -> None:
    method = LambdaEquitune(feature_dim=6, hidden=(), positive=positive).to(dtype)
    with torch.no_grad():  # scores from -6e4 to 6e4: exp overflows and softplus underflows in half precision
        method.lambda_net.mlp[-1].weight.fill_(1e4)
        method.lambda_net.feature_norm = False
    features = torch.tensor([[-1.0] * 6, [1.0] * 6, [-0.5] * 6, [-6.0] * 6]).to(dtype).reshape(1, 4, 6)
    plan = Plan(torch.zeros(1, 4), torch.full((1, 4), 0.25))
    weights = method.reweigh(plan, [], method.scores(features).unsqueeze(-1)).weights
    assert weights.dtype == torch.float32 and torch.isfinite(weights).all()
    assert (weights >= 0).all()
    assert_close(weights.sum(1), torch.ones(1))
    assert weights[0, 1] > 0.99, "the copy with the largest score dominates"


def test_bfloat16_model_gives_finite_invariant_outputs(images: torch.Tensor) -> None:
    base = SmallCNN().to(torch.bfloat16).eval()
    wrapped = symwrap.wrap(base, "rot90", "lambda_equitune", features="features").to(torch.bfloat16).eval()
    x = images.to(torch.bfloat16)
    wrapped(x)
    _randomize(wrapped.method, 30.0)
    out = wrapped(x)
    assert torch.isfinite(out).all()
    for moved in _moved(symwrap.get_group("rot90"), x):
        assert_close(wrapped(moved).float(), out.float(), rtol=1e-2, atol=1e-2)  # bfloat16 round-off


# ------------------------------------------------------------------------------------------------ bad input
def test_model_that_cannot_be_split_says_how_to_name_features(cnn: SmallCNN) -> None:
    with pytest.raises(IncompatibleModelError) as info:
        symwrap.wrap(cnn, "rot90", "lambda_equitune")
    message = str(info.value)
    assert "adapter 'torch' cannot split a SmallCNN into features and head" in message
    assert "features='features'" in message and "feature_model=" in message
    assert "features, head" in message  # lists the submodules to choose from


def test_unknown_feature_submodule(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'features': SmallCNN has no submodule 'backbone'"):
        symwrap.wrap(cnn, "rot90", "lambda_equitune", features="backbone")


@pytest.mark.parametrize(
    ("options", "field"),
    [({"hidden": (0,)}, "hidden"), ({"positive": "relu"}, "positive"), ({"min_lambda": 0.0}, "min_lambda")],
)
def test_invalid_options_name_the_field(options: dict, field: str, cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match=f"invalid option '{field}'"):
        symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features", **options)


def test_lambda_equitune_needs_a_finite_group(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match="needs a finite group"):
        symwrap.wrap(cnn, "so2", "lambda_equitune", features="features")


@pytest.mark.gpu
@pytest.mark.parametrize(("method", "options"), [("lambda_equitune", {"features": "features"}), ("equizero", {})])
def test_half_precision_on_cuda(method: str, options: dict) -> None:
    base = SmallCNN().cuda().half().eval()
    x = 4 * torch.randn(3, 3, 16, 16, device="cuda", dtype=torch.half)
    wrapped = symwrap.wrap(base, "rot90", method, **options).eval()
    with torch.no_grad():
        reference = wrapped(x)
        if method == "lambda_equitune":
            _randomize(wrapped.method)
            reference = wrapped(x)
        assert reference.device.type == "cuda" and torch.isfinite(reference).all()
        for k in range(4):
            moved = torch.rot90(x, k, dims=(-2, -1))
            assert_close(wrapped(moved).float(), reference.float(), rtol=1e-2, atol=1e-2)  # float16 round-off
