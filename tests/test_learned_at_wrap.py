"""Learned parts exist from ``symwrap.wrap`` on: a λ-net sized by ``example_input=`` (or the adapter), a learned
canonicalizer for the images' channels; an optimizer made right after ``wrap`` holds them, and a saved wrapper's
``state_dict`` loads into a fresh ``wrap()``. A training-mode call that would build them says how to build them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
import symwrap.train
from symwrap.errors import ConfigError
from tests.conftest import SmallCNN


def test_example_input_builds_the_lambda_net_at_wrap_time(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features", example_input=images[:2])
    assert wrapped.training, "wrap's example forward restores the training mode"
    lambda_params = list(wrapped.method.lambda_net.parameters())
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    assert lambda_params and {id(p) for p in trainable} == {id(p) for p in lambda_params}
    optimizer = torch.optim.SGD(trainable, lr=0.5)  # made before any call: it must move the λ-net
    before = [p.detach().clone() for p in lambda_params]
    wrapped(images).logsumexp(-1).sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, wrapped.method.lambda_net.parameters()))


def test_example_input_as_keyword_arguments(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features", example_input={"x": images[:1]})
    assert wrapped.method.options.feature_dim == 8


def test_training_call_that_would_build_the_lambda_net_says_how(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    with pytest.raises(ConfigError, match=r"features='features'.*example_input=.*symwrap\.train\.prepare"):
        wrapped(images)
    with torch.no_grad():  # inference (no gradients, or eval mode) still sizes it on the fly
        wrapped(images)
    assert wrapped.method.lambda_net is not None


def test_prepare_builds_from_an_example_and_asks_for_one(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    with pytest.raises(ConfigError, match=r"prepare\(\).*\(lambda_net\); pass example_input="):
        symwrap.train.prepare(wrapped)
    params = symwrap.train.prepare(wrapped, images[:2])
    assert {id(p) for p in params} == {id(p) for p in wrapped.method.lambda_net.parameters()}


def test_saved_state_dict_loads_into_a_fresh_wrap(cnn: SmallCNN, images: torch.Tensor) -> None:
    trained = symwrap.wrap(cnn, "d4", "lambda_equitune", features="features", example_input=images[:1]).eval()
    with torch.no_grad():
        for p in trained.method.lambda_net.parameters():
            p.copy_(torch.randn_like(p))
    state = copy.deepcopy(trained.state_dict())
    fresh = symwrap.wrap(copy.deepcopy(cnn), "d4", "lambda_equitune", features="features", example_input=images[:1])
    fresh.load_state_dict(state)  # strict: same keys, same shapes, before any call
    assert_close(fresh.eval()(images), trained(images), rtol=1e-6, atol=1e-6)  # chunking may differ


def test_learned_canonicalizer_takes_the_channels_of_the_example(images: torch.Tensor) -> None:
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 1, 12, 12)
    gray(x)
    wrapped = symwrap.wrap(gray, "rot90", "canonicalization", canonicalizer="learned", example_input=x)
    assert wrapped.method.canonicalizer.in_channels == 1 and wrapped.method.options.in_channels == 1
    assert any(p is wrapped.method.canonicalizer.net[0].weight for p in wrapped.parameters())
    default = symwrap.wrap(SmallCNN(), "rot90", "canonicalization")  # nothing tells: RGB images
    assert default.method.canonicalizer.in_channels == 3
