"""λ-equitune: a weighted group average whose weights come from a small learned network.

    f_λ(x) = Σ_g λ(g·x) · g⁻¹·f(g·x) / Σ_g λ(g·x),   λ > 0

Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models", NeurIPS 2023,
arXiv 2305.09900. ``λ`` sees the features of each transformed copy ``g·x`` (the backbone's features, a named
submodule's output, or a separate frozen ``feature_model``), so the weights move with the input: for ``h·x``
the copies and their weights are the same set, permuted, and the output is exactly invariant (or, with
outputs pulled back by ``g⁻¹``, equivariant) whatever ``λ`` has learned.

Positivity: ``positive="softplus"`` (default) uses ``λ = softplus(z) + min_lambda``; ``"exp"`` uses
``λ = exp(z)``, normalised as a softmax over the copies (max subtracted). Both are computed in float32
(float64 for float64 features), so float16/bfloat16 models neither overflow nor divide by zero. The last
layer starts at zero: an untrained λ is constant and the method starts exactly as group averaging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall
from symwrap.adapters.torch import SubmoduleCapture, TorchAdapter, pool_features, submodule_features
from symwrap.autocast import as_dtype, autocast_enabled, float32_or_64
from symwrap.config import option, require
from symwrap.errors import ConfigError, IncompatibleModelError
from symwrap.methods.base import Plan, Reweighing
from symwrap.methods.group_averaging import GroupAveraging

__all__ = ["LambdaEquitune", "LambdaEquituneOptions", "LambdaNet"]

_POSITIVE = ("softplus", "exp")


@dataclass
class LambdaEquituneOptions:
    hidden: tuple[int, ...] = option((64,), "hidden layer sizes of the λ-net MLP (() for a linear λ)")
    features: str | None = option(
        None, "dotted path of the submodule whose output are the λ features (e.g. 'features' or 'backbone.pool')"
    )
    feature_dim: int | None = option(
        None, "size D of the features (None: from the adapter at wrap time, else from wrap's example_input)"
    )
    positive: str = option("softplus", "how λ is made positive: 'softplus' (+ min_lambda) or 'exp' (a softmax)")
    min_lambda: float = option(1e-4, "floor added to softplus(z), so Σ λ > 0 even when softplus underflows")
    dropout: float = option(0.0, "dropout in the λ-net (active in train mode only)")
    feature_norm: bool = option(True, "layer-normalise the features (without parameters) before the λ-net")
    freeze_base: bool = option(True, "freeze the base model (requires_grad False, kept in eval mode)")

    def __post_init__(self) -> None:
        if isinstance(self.hidden, list):
            self.hidden = tuple(self.hidden)
        require(
            isinstance(self.hidden, tuple) and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "hidden",
            f"must be a tuple of positive ints (layer sizes), got {self.hidden!r}",
        )
        require(
            self.features is None or (isinstance(self.features, str) and bool(self.features)),
            "features",
            f"must be a dotted submodule path such as 'backbone', got {self.features!r}",
        )
        require(
            self.feature_dim is None or (isinstance(self.feature_dim, int) and self.feature_dim >= 1),
            "feature_dim",
            f"must be a positive int or None, got {self.feature_dim!r}",
        )
        require(self.positive in _POSITIVE, "positive", f"must be one of {_POSITIVE}, got {self.positive!r}")
        require(
            isinstance(self.min_lambda, (int, float)) and self.min_lambda > 0,
            "min_lambda",
            f"must be > 0, got {self.min_lambda!r}",
        )
        require(
            isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
            "dropout",
            f"must be in [0, 1), got {self.dropout!r}",
        )
        require(isinstance(self.feature_norm, bool), "feature_norm", "must be True or False")
        require(isinstance(self.freeze_base, bool), "freeze_base", "must be True or False")


class LambdaNet(nn.Module):
    """The λ-net: an MLP from features ``(..., D)`` to one unconstrained score ``z`` ``(...)`` per copy.

    ``mlp`` holds the layers (``Linear, ReLU, Dropout`` per hidden layer, then the last ``Linear``; its state-dict
    keys are ``mlp.0.weight``, ...). :meth:`forward` applies their weights as functional calls, one module call
    for the whole λ-net instead of one per layer (the per-layer module calls cost as much as the λ-net's arithmetic
    on a few rows; ``benchmarks/bench_overhead.py``); hooks go on the ``LambdaNet`` itself, and a layer replaced
    in ``mlp`` is not seen.

    Args:
        feature_dim: ``D``.
        hidden: Hidden layer sizes.
        dropout: Dropout after each hidden layer (train mode only).
        feature_norm: Layer-normalise the input (no parameters), so the scale of the backbone does not matter.
    """

    def __init__(self, feature_dim: int, hidden: tuple[int, ...], dropout: float, feature_norm: bool) -> None:
        super().__init__()
        self.feature_norm = feature_norm
        self.dropout = dropout
        layers: list[nn.Module] = []
        size = feature_dim
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        last = nn.Linear(size, 1)
        nn.init.zeros_(last.weight)  # a constant λ at the start: exactly group averaging until trained
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)
        self._linears: list[nn.Linear] = [m for m in layers if isinstance(m, nn.Linear)] + [last]  # the same modules

    @property
    def last(self) -> nn.Linear:
        """The output layer (``mlp[-1]``, without the ``Sequential`` lookup)."""
        return self._linears[-1]

    def forward(self, features: Tensor) -> Tensor:
        """``(..., D)`` features -> ``(...)`` scores."""
        first, *rest = self._linears
        if not self.feature_norm:
            h = F.linear(features, first.weight, first.bias)
        elif torch.compiler.is_compiling():
            h = _layer_norm_then_linear(features, first)
        else:
            h = F.linear(F.layer_norm(features, features.shape[-1:]), first.weight, first.bias)
        for layer in rest:
            h = F.relu(h)
            if self.training and self.dropout > 0:
                h = F.dropout(h, self.dropout, training=True)
            h = F.linear(h, layer.weight, layer.bias)
        return h.squeeze(-1)


def _layer_norm_then_linear(features: Tensor, layer: nn.Linear, eps: float = 1e-5) -> Tensor:
    """``layer(layer_norm(features))`` for features ``(..., D)``, with the normalisation moved past the matmul.

    ``((f − μ)·rstd)·Wᵀ + b = (f·Wᵀ − μ·(W·1)ᵀ)·rstd + b``: the matmul reads the features as they are, and only
    the per-row mean and variance are reduced over them. Under ``torch.compile`` (CPU inductor) the plain form
    writes the normalised features out from the model's feature map: when that map is a flattened channels-last
    convolution output (the digits CNN), inductor recomputes the flatten with scalar loops. Compiled λ-equitune on
    the digits CNN at B = 64 takes 1.36 × the |G|-forward limit with this form and per-chunk scores
    (``benchmarks/bench_suite.py --models digits_cnn --compile on``, docs/performance.md). The subtraction after
    the matmul loses ~|μ|/σ more float32 rounding than the plain form (tested within 1e-4 for |μ|/σ = 10); eager
    calls keep the plain form: two kernels instead of eight.
    """
    variance, mean = torch.var_mean(features, dim=-1, unbiased=False, keepdim=True)
    centred = F.linear(features, layer.weight) - mean * layer.weight.sum(dim=1)
    return torch.addcmul(layer.bias, centred, torch.rsqrt(variance + eps))


class LambdaEquitune(GroupAveraging):
    """Group averaging weighted by a learned, positive ``λ(g·x)`` (see the module docstring).

    Args:
        feature_model: Optional separate frozen model; its output on each copy ``g·x`` (pooled to ``(R, D)``)
            are the λ features (as the paper does with CLIP's image encoder). Not saved by
            ``save_pretrained`` (pass it again to ``from_pretrained``).
        **options: :class:`LambdaEquituneOptions`.
    """

    name: ClassVar[str] = "lambda_equitune"
    Options: ClassVar[type] = LambdaEquituneOptions
    reweighs: ClassVar[bool] = True
    needs_features: ClassVar[bool] = True

    def __init__(self, feature_model: nn.Module | None = None, **options: Any) -> None:
        super().__init__(**options)
        if feature_model is not None and not isinstance(feature_model, nn.Module):
            raise ConfigError(
                f"invalid option 'feature_model': expected a torch.nn.Module, got {type(feature_model).__name__}"
            )
        if feature_model is not None and self.options.features is not None:
            raise ConfigError("give either features='submodule path' or feature_model=..., not both")
        self.feature_model = feature_model
        if feature_model is not None:
            feature_model.requires_grad_(False).eval()
        self.lambda_net: LambdaNet | None = None
        self._captures: dict[str, SubmoduleCapture] = {}  # the features= hook, registered once (compile-friendly)
        if self.options.feature_dim is not None:
            self._build(self.options.feature_dim, torch.device("cpu"), torch.float32)

    # ------------------------------------------------------------------ setup
    def attach(self, model: nn.Module, adapter: Any) -> None:
        if self.options.freeze_base:
            model.requires_grad_(False)
            model.eval()
        if self.options.features is not None:
            try:
                model.get_submodule(self.options.features)
            except AttributeError:
                names = ", ".join(n for n, _ in model.named_children()) or "none"
                raise ConfigError(
                    f"invalid option 'features': {type(model).__name__} has no submodule {self.options.features!r}. "
                    f"Its top-level submodules are: {names}; use a dotted path such as 'backbone.pool'."
                ) from None
            return
        if self.feature_model is None and not _can_split(adapter):
            names = ", ".join(n for n, _ in model.named_children()) or "none"
            raise IncompatibleModelError(
                f"lambda_equitune needs per-copy features, but adapter {adapter.name!r} cannot split a "
                f"{type(model).__name__} into features and head. Name the submodule whose output are the features, "
                f"e.g. symwrap.wrap(model, group, 'lambda_equitune', features='{_guess(model)}') (its top-level "
                f"submodules: {names}), or pass a separate frozen feature model with feature_model=..."
            )

    def build_learned(self, adapter: Any, group: Any, example_input: Any = None) -> None:
        """Build the λ-net now when the adapter knows the feature width (its features, not a named submodule's or a
        separate feature model's, whose widths only a forward tells)."""
        if self.lambda_net is not None or self.feature_model is not None or self.options.features is not None:
            return
        width = adapter.feature_width()
        if width is not None:
            dtype = torch.float64 if _weights_dtype(adapter.model) == torch.float64 else torch.float32
            self._build(int(width), torch.device("cpu"), dtype)

    def unbuilt_parts(self) -> list[str]:
        return ["lambda_net"] if self.lambda_net is None else []

    @property
    def keeps_base_in_eval(self) -> bool:
        return bool(self.options.freeze_base)

    def train(self, mode: bool = True) -> LambdaEquitune:
        super().train(mode)
        if self.feature_model is not None:  # frozen: never dropout/batch-norm updates
            self.feature_model.eval()
        return self

    def _build(self, feature_dim: int, device: torch.device, dtype: torch.dtype) -> LambdaNet:
        o = self.options
        self.lambda_net = LambdaNet(feature_dim, o.hidden, o.dropout, o.feature_norm).to(device=device, dtype=dtype)
        self.lambda_net.train(self.training)
        o.feature_dim = feature_dim
        return self.lambda_net

    # ------------------------------------------------------------------ engine hooks
    def features_and_output(
        self, call: BoundCall, acted_rows: list[Tensor], src: Tensor, adapter: Adapter
    ) -> tuple[Tensor, Any]:
        """One forward of orbit rows: each row's λ-net score ``(R, 1)`` (float32; float64 for float64 features) and
        the model's output.

        The λ-net runs here, on each chunk's features as the forward produces them, rather than on the whole orbit's
        features at :meth:`reweigh`: the ``(R, D)`` features are never concatenated across chunks (compiled, inductor
        wrote that concatenation of the digits CNN's channels-last feature maps with scalar loops, more work than
        the λ-net itself), and only a score per row is kept until the weights are known. The λ-net is row-wise, so
        the result is the same.
        """
        features, out = self._features(call, acted_rows, src, adapter)
        if autocast_enabled(features.device):  # the forward ran under the caller's autocast; the λ-net never does
            with torch.autocast(features.device.type, enabled=False):
                return self.scores(features).unsqueeze(-1), out
        return self.scores(features).unsqueeze(-1), out

    def _features(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor, adapter: Adapter) -> tuple[Tensor, Any]:
        """The per-row features ``(R, D)`` of one forward and the model's output."""
        if self.feature_model is not None:
            out = call.call(acted_rows, src)
            with torch.no_grad():
                feats = self.feature_model(acted_rows[0])
            return pool_features(feats, src.shape[0], f"feature_model {type(self.feature_model).__name__}"), out
        if self.options.features is not None:
            return submodule_features(
                adapter.model, self.options.features, lambda: call.call(acted_rows, src), src.shape[0], self._captures
            )
        return adapter.features_and_output(call, acted_rows, src)

    def scores(self, features: Tensor) -> Tensor:
        """The λ-net's unconstrained scores ``z`` ``(...)`` for features ``(..., D)``, in float32 (float64 kept).

        Builds the λ-net on first use, with ``D`` from ``features`` (unless ``feature_dim`` was given).
        """
        net = self.lambda_net
        if net is None:
            if self.training and torch.is_grad_enabled():
                raise ConfigError(_UNBUILT_IN_TRAINING.format(source=self._feature_source()))
            dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
            net = self._build(features.shape[-1], features.device, dtype)
        elif features.shape[-1] != self.options.feature_dim:
            raise IncompatibleModelError(
                f"the λ-net was built for {self.options.feature_dim} features but the model gave "
                f"{features.shape[-1]}; use the same base/feature model the λ-net was trained with"
            )
        return float32_or_64(net(_like(features, net.last.weight)))

    def _feature_source(self) -> str:
        if self.feature_model is not None:
            return f"feature_model={type(self.feature_model).__name__}"
        if self.options.features is not None:
            return f"features={self.options.features!r}"
        return "the model"

    def lean_forward(
        self, call: BoundCall, adapter: Adapter, src: Tensor, plan: Plan, reduce: str
    ) -> Callable[[Tensor], Tensor | None] | None:
        """λ-equitune's call on the fast path (:meth:`Method.lean_forward`), for the ``logits`` reduction: the
        forward with its features, the λ-net, the normalised weights and one batched matmul, in
        :meth:`features_and_output`, :meth:`reweigh` and the engine's order of operations, with :meth:`scores`'s
        checks made only when the features do not fit the built λ-net (wrong width: its error; another dtype: the
        cast). A uniform prior over a power-of-two number of copies (``d4``, ``rot90``, ``flip``) is left out of the
        weights: scaling by a power of two is exact, so ``p·λ / Σ p·λ`` and ``λ / Σ λ`` are the same floats."""
        batch, copies = plan.weights.shape
        if reduce != "logits" or copies < 2:
            return None
        prior: Tensor | None = plan.weights
        if copies & (copies - 1) == 0 and bool((plan.weights == plan.weights[:, :1]).all()):
            prior = None

        def run(rows: Tensor) -> Tensor | None:
            features, y = self._features(call, [rows], src, adapter)
            if type(y) is not Tensor:
                return None
            net, options = self.lambda_net, self.options
            if net is not None and features.shape[-1] == options.feature_dim:
                scores = float32_or_64(net(_like(features, net.last.weight))).view(batch, copies)
            else:
                scores = self.scores(features).view(batch, copies)
            if options.positive != "softplus" or prior is not None:
                weights = self.reweigh(plan, [], scores.unsqueeze(-1)).weights
            else:
                lam = F.softplus(scores) + options.min_lambda
                weights = lam / lam.sum(dim=1, keepdim=True)
            y = float32_or_64(y)
            summed = torch.bmm(as_dtype(weights, y.dtype).unsqueeze(1), y.reshape(batch, copies, -1))
            return summed.reshape(batch, *y.shape[1:])

        return run

    def reweigh(self, plan: Plan, values: list[Tensor], features: Tensor | None, class_dim: int = -1) -> Reweighing:
        """The normalised weights ``(B, k)`` from the copies' λ-net scores ``features`` ``(B, k, 1)`` (what
        :meth:`features_and_output` returned for each row; :meth:`scores` of raw features gives them)."""
        assert features is not None
        scores = features.squeeze(-1)  # (B, k)
        prior = _like(plan.weights, scores)
        if self.options.positive == "exp":
            # exp(z)·prior / Σ exp(z)·prior as a softmax: the max is subtracted, nothing overflows or divides by 0
            weights = torch.softmax(scores + prior.log(), dim=1)
        else:
            lam = F.softplus(scores) + self.options.min_lambda  # > 0 even where softplus underflows
            weighted = prior * lam
            weights = weighted / weighted.sum(dim=1, keepdim=True)
        return Reweighing(weights)

    def lambdas(self, features: Tensor) -> Tensor:
        """Unnormalised ``λ`` ``(...)`` for features ``(..., D)`` (for inspection; the weights are normalised)."""
        if self.lambda_net is None:
            raise ConfigError(
                "the λ-net is not built yet: wrap with example_input=<a few inputs> (or feature_dim=D), or call "
                "symwrap.train.prepare(wrapped, example_input)"
            )
        scores = self.lambda_net(features).float()
        return scores.exp() if self.options.positive == "exp" else F.softplus(scores) + self.options.min_lambda

    def state_to_save(self) -> dict[str, Tensor]:
        if self.lambda_net is None:
            raise ConfigError(
                "the λ-net is not built yet (only a forward tells its input size): wrap with example_input=<a few "
                "inputs> (or feature_dim=D), or call symwrap.train.prepare(wrapped, example_input), before "
                "save_pretrained"
            )
        return {k: v for k, v in self.state_dict().items() if not k.startswith("feature_model.")}


_UNBUILT_IN_TRAINING = (
    "lambda_equitune's λ-net is not built: the width D of the features from {source} is only known after a "
    "forward, and building it now, inside a training-mode call, would leave it out of any optimizer made before "
    "(HF Trainer, Lightning's configure_optimizers, a plain loop): it would never train. Pass "
    "example_input=<a few inputs> to symwrap.wrap (or feature_dim=D), or call "
    "symwrap.train.prepare(wrapped, example_input) before making the optimizer."
)


def _weights_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (``None`` without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _like(x: Tensor, reference: Tensor) -> Tensor:
    """``x`` on ``reference``'s device and dtype; no dispatch when it already is (this runs every call)."""
    if x.dtype is reference.dtype and x.device == reference.device:
        return x
    return x.to(device=reference.device, dtype=reference.dtype)


def _can_split(adapter: Any) -> bool:
    """Whether the adapter implements features_and_output for this model (the torch adapter only with features=)."""
    if isinstance(adapter, TorchAdapter):
        return adapter.features is not None
    return type(adapter).features_and_output is not Adapter.features_and_output


def _guess(model: nn.Module) -> str:
    """A plausible feature submodule name for the error message: the second-to-last top-level child."""
    names = [n for n, _ in model.named_children()]
    for candidate in ("features", "backbone", "encoder", "body", "trunk"):
        if candidate in names:
            return candidate
    return names[-2] if len(names) >= 2 else "backbone"
