"""Canonicalization: exact invariance/equivariance from one pass per input, the learned canonicalizer and
its prior, and the analytic canonicalizers (shift, PCA, sorting). Tolerance: float32 <= 1e-5."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.actions import ImageAction, PointCloudAction
from symwrap.canonicalizers import LearnedCanonicalizer
from tests.conftest import DenseCNN, PointMLP, SmallCNN
from tests.test_frame_averaging import POINT_GROUPS, CountingModel, SetMLP, moved, random_elements

EXACT_IMAGE_GROUPS = ["rot90", "rot180", "flip", "vflip", "d4", "c2", "c4", "d2"]


def _moved_images(group: symwrap.groups.Group, x: torch.Tensor) -> list[torch.Tensor]:
    action = group.default_action()
    return [action.apply(x, torch.arange(x.shape[0]), g.expand(x.shape[0], *g.shape), group) for g in group.elements()]


@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_learned_canonicalization_is_exactly_invariant(name: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group(name)
    assert symwrap.check(cnn, group, images).max_error > 1e-2
    wrapped = symwrap.wrap(cnn, name, "canonicalization").eval()
    assert isinstance(wrapped.method.canonicalizer, LearnedCanonicalizer)
    reference = wrapped(images)
    for moved_x in _moved_images(group, images):
        assert_close(wrapped(moved_x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_learned_canonicalization_is_equivariant_for_dense_outputs(
    name: str, dense_cnn: DenseCNN, images: torch.Tensor
) -> None:
    group = symwrap.get_group(name)
    wrapped = symwrap.wrap(dense_cnn, name, "canonicalization", output="equivariant").eval()
    reference = wrapped(images)
    for moved_x, moved_y in zip(_moved_images(group, images), _moved_images(group, reference)):
        assert_close(wrapped(moved_x), moved_y, rtol=1e-5, atol=1e-5)


def test_each_input_is_pulled_back_by_its_own_element(dense_cnn: DenseCNN, images: torch.Tensor) -> None:
    # No state from a previous call: a mixed batch gives the same rows as inputs wrapped one at a time.
    wrapped = symwrap.wrap(dense_cnn, "d4", "canonicalization", output="equivariant").eval()
    group = symwrap.get_group("d4")
    mixed = torch.cat([_moved_images(group, images[i : i + 1])[3 * i + 1] for i in range(3)])
    together = wrapped(mixed)
    for i in range(3):
        assert_close(together[i : i + 1], wrapped(mixed[i : i + 1]), rtol=1e-5, atol=1e-5)
    elements = wrapped.method.plan(mixed, group).elements
    assert elements.shape == (3, 1, 2, 2)


def test_canonicalization_calls_the_base_model_once_per_input(images: torch.Tensor) -> None:
    counter = CountingModel(SmallCNN().eval())
    wrapped = symwrap.wrap(counter, "d4", "canonicalization").eval()
    wrapped(images)  # the first call of a shape may time chunk sizes ("auto"); count the calls after it
    counter.calls = counter.rows = 0
    wrapped(images)
    assert (counter.calls, counter.rows) == (1, images.shape[0])


def test_so2_with_a_discretization_uses_the_rotations_of_c_n(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "so2", "canonicalization", discretization=4).eval()
    reference = wrapped(images)
    for moved_x in _moved_images(symwrap.get_group("rot90"), images):
        assert_close(wrapped(moved_x), reference, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- training
def test_training_mode_matches_inference_and_the_task_gradient_reaches_the_canonicalizer(
    cnn: SmallCNN, images: torch.Tensor
) -> None:
    for estimator in ["straight_through", "gumbel"]:
        wrapped = symwrap.wrap(cnn, "rot90", "canonicalization", estimator=estimator)
        wrapped.eval()
        inference = wrapped(images)
        wrapped.train()
        training = wrapped(images)
        if estimator == "straight_through":
            assert_close(training, inference, rtol=1e-5, atol=1e-5)  # one-hot forward value = the argmax copy
        training.pow(2).sum().backward()
        grads = [p.grad for p in wrapped.method.canonicalizer.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.slow
def test_prior_loss_decreases_and_the_identity_rate_rises(cnn: SmallCNN) -> None:
    upright = torch.randn(16, 3, 16, 16)
    wrapped = symwrap.wrap(cnn, "rot90", "canonicalization", size=8, chunk_size=None)
    method = wrapped.method
    optimizer = torch.optim.Adam(method.parameters(), lr=2e-2)
    before, rate_before = float(method.prior_loss(upright).detach()), method.identity_rate(upright)
    for _ in range(30):
        loss = method.prior_loss(upright)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, rate_after = float(method.prior_loss(upright).detach()), method.identity_rate(upright)
    assert after < 0.5 * before, (before, after)
    assert rate_after > 0.9 > rate_before, (rate_before, rate_after)
    # and it is still exactly invariant after training
    wrapped.eval()
    reference = wrapped(upright[:4])
    for moved_x in _moved_images(symwrap.get_group("rot90"), upright[:4]):
        assert_close(wrapped(moved_x), reference, rtol=1e-5, atol=1e-5)


def test_the_learned_canonicalizer_is_part_of_the_method_state(cnn: SmallCNN, images: torch.Tensor) -> None:
    a = symwrap.wrap(cnn, "d4", "canonicalization", canonicalizer="learned").eval()
    b = symwrap.wrap(cnn, "d4", "canonicalization", canonicalizer="learned").eval()
    state = a.method.state_dict()
    assert any(k.startswith("canonicalizer.net.") for k in state)
    assert any(k.startswith("method.canonicalizer.") for k in a.state_dict())
    b.method.load_state_dict(state)
    assert_close(b.method.scores(images), a.method.scores(images))


# ---------------------------------------------------------------------------------------------- analytic
class TinyViT(nn.Module):
    """Patch embedding, learned position embeddings, one transformer layer, mean pool: not shift invariant."""

    def __init__(self, size: int = 16, patch: int = 4, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.block(tokens).mean(dim=1))


@pytest.mark.parametrize("stride", [1, 4])
def test_shift_canonicalization_makes_a_vit_exactly_shift_invariant(stride: int, images: torch.Tensor) -> None:
    vit = TinyViT().eval()
    shifts = [(1, 3), (5, 0), (15, 9)] if stride == 1 else [(4, 0), (8, 12), (0, 4)]
    with torch.no_grad():
        assert max(float((vit(torch.roll(images, s, (-2, -1))) - vit(images)).abs().max()) for s in shifts) > 1e-2
    wrapped = symwrap.wrap(vit, "shift", "canonicalization", group_options={"stride": stride})
    reference = wrapped(images)
    for s in shifts:
        assert_close(wrapped(torch.roll(images, s, (-2, -1))), reference, rtol=1e-5, atol=1e-5)


def test_shift_canonicalization_is_equivariant_for_dense_outputs(dense_cnn: DenseCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(dense_cnn, "shift", "canonicalization", output="equivariant")
    reference = wrapped(images)
    for s in [(1, 3), (7, 11)]:
        assert_close(wrapped(torch.roll(images, s, (-2, -1))), torch.roll(reference, s, (-2, -1)), rtol=1e-5, atol=1e-5)


def test_shift_ties_are_reported() -> None:
    flat = torch.ones(2, 3, 8, 8)
    with pytest.warns(symwrap.frames.DegenerateFrameWarning, match="two blocks of equal top energy"):
        symwrap.wrap(SmallCNN(size=8), "shift", "canonicalization")(flat)


@pytest.mark.parametrize("name", POINT_GROUPS)
def test_pca_canonicalization_is_invariant_and_equivariant(name: str) -> None:
    from tests.test_frame_averaging import PositionNet

    model = PointMLP(points=10).eval()
    x = torch.randn(4, 10, 3)
    g = random_elements(name, 4)
    counter = CountingModel(model)
    wrapped = symwrap.wrap(counter, name, "canonicalization", chunk_size=None)
    reference = wrapped(x)
    assert counter.rows == 4
    assert_close(wrapped(moved(name, x, g)), reference, rtol=1e-5, atol=1e-5)
    equi = symwrap.wrap(PositionNet().eval(), name, "canonicalization", output="equivariant")
    assert_close(equi(moved(name, x, g)), moved(name, equi(x), g, PointCloudAction()), rtol=1e-5, atol=1e-5)


def test_sort_canonicalization_makes_a_set_model_invariant() -> None:
    model = SetMLP().eval()
    x = torch.randn(4, 6, 3)
    wrapped = symwrap.wrap(model, "perm", "canonicalization")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference = wrapped(x)
        for _ in range(3):
            assert_close(wrapped(x[:, torch.randperm(6)]), reference, rtol=1e-6, atol=1e-6)


def test_configs_are_json_friendly_and_auto_builds_the_learned_canonicalizer_at_wrap_time(cnn: SmallCNN) -> None:
    import json

    wrapped = symwrap.wrap(cnn, "rot90", "canonicalization")  # canonicalizer="auto"
    assert any(k.startswith("canonicalizer.") for k in wrapped.method.state_dict())
    json.dumps(wrapped.symwrap_config.to_dict())
    frames = symwrap.wrap(SetMLP(), "perm", "frame_averaging", sort_by=[0, 2], mask="mask")
    assert json.loads(json.dumps(frames.symwrap_config.to_dict()))["method_options"]["sort_by"] == [0, 2]


@pytest.mark.parametrize("canonicalizer", ["auto", "learned"])
def test_learned_canonicalizer_round_trips_through_save_pretrained(
    canonicalizer: str, cnn: SmallCNN, images: torch.Tensor, tmp_path: object
) -> None:
    from pathlib import Path

    from safetensors.torch import load_file

    wrapped = symwrap.wrap(cnn, "d4", "canonicalization", canonicalizer=canonicalizer).eval()
    with torch.no_grad():  # weights unlike a fresh init, so a load that silently kept new weights would show
        for p in wrapped.method.canonicalizer.parameters():
            p.add_(torch.randn_like(p))
    directory = Path(str(tmp_path))
    wrapped.save_pretrained(directory)
    saved = load_file(directory / "symwrap_weights.safetensors")
    assert saved and all(name.startswith("canonicalizer.") for name in saved)
    assert not any(name.startswith("base_model") for name in saved)
    restored = symwrap.SymmetrizedModel.from_pretrained(cnn, directory)
    assert_close(restored(images), wrapped(images), rtol=0, atol=0)
    for name, value in wrapped.method.canonicalizer.state_dict().items():
        assert torch.equal(restored.method.canonicalizer.state_dict()[name], value), name


# ---------------------------------------------------------------------------------------------- per-call caches
def _direct_scores(canon: LearnedCanonicalizer, x: torch.Tensor, group: symwrap.groups.Group, elements: torch.Tensor):
    """The canonicalizer's scores without its caches: the action applied afresh, every layer of the net run."""
    small = canon.downscale(x)
    batch, order = small.shape[0], elements.shape[0]
    src = torch.arange(batch).repeat_interleave(order)
    copies = ImageAction().apply(small, src, elements.repeat(batch, 1, 1), group)
    return canon.net(copies).reshape(batch, order)


def test_learned_canonicalizer_caches_never_change_the_scores() -> None:
    # The gather of the |G| copies is cached per shape, dtype, group and element values, and the 4×4 -> 4×4 pool
    # is skipped: each call below changes one of those (a new batch size, image size, group, the same group's
    # elements reordered, a size that is really pooled, float64) and must give the uncached scores exactly.
    torch.manual_seed(0)
    canon = LearnedCanonicalizer(2, 16, 4).eval()
    d4, flip, vflip = (symwrap.get_group(n) for n in ("d4", "flip", "vflip"))
    cases = [
        (torch.randn(2, 2, 8, 8), d4, d4.elements()),
        (torch.randn(2, 2, 8, 8), d4, d4.elements()),  # a cache hit
        (torch.randn(3, 2, 8, 8), d4, d4.elements()),
        (torch.randn(2, 2, 8, 8), d4, d4.elements()[[0, 3, 1, 2, 5, 4, 7, 6]]),
        (torch.randn(2, 2, 6, 6), d4, d4.elements()),
        (torch.randn(2, 2, 8, 8), flip, flip.elements()),
        (torch.randn(2, 2, 8, 8), vflip, vflip.elements()),  # same shape as flip's, other values
        (torch.randn(2, 2, 40, 40), d4, d4.elements()),  # downscaled to 16×16, then really pooled to 4×4
    ]
    with torch.no_grad():
        for x, group, elements in cases:
            assert torch.equal(canon(x, group, elements), _direct_scores(canon, x, group, elements))
        canon.double()
        x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
        scores = canon(x, d4, d4.elements())
        assert scores.dtype == torch.float64
        assert torch.equal(scores, _direct_scores(canon, x, d4, d4.elements()))


@pytest.mark.parametrize(
    "shape", [(1, 2, 8, 8), (3, 2, 8, 8), (2, 2, 40, 40)], ids=["B1", "B3", "downscaled-and-pooled"]
)
def test_the_lean_scores_of_a_layout_are_the_module_s_scores(shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    canon = LearnedCanonicalizer(2, 16, 4).eval()
    d4 = symwrap.get_group("d4")
    elements = d4.elements()
    scores = canon.lean_scores(torch.zeros(shape), d4, elements)
    with torch.no_grad():
        for _ in range(2):
            x = torch.randn(shape)
            assert torch.equal(scores(x), _direct_scores(canon, x, d4, elements))


def test_the_lean_scores_call_the_module_when_it_has_hooks_or_other_weights_or_elements() -> None:
    torch.manual_seed(3)
    canon = LearnedCanonicalizer(2, 16, 4).eval()
    d4 = symwrap.get_group("d4")
    elements = d4.elements().clone()
    x = torch.randn(2, 2, 8, 8)
    scores = canon.lean_scores(x, d4, elements)
    seen = []
    handle = canon.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        assert torch.equal(scores(x), seen[-1]), "the hook ran, on the scores returned"
        handle.remove()
        elements.copy_(elements[[1, 2, 3, 0, 5, 6, 7, 4]])  # the same tensor, other values: the module re-gathers
        assert torch.equal(scores(x), _direct_scores(canon, x, d4, elements))
        canon.double()  # the weights' dtype: the module casts the images, as in a general call
        assert scores(x).dtype == torch.float64
        assert torch.equal(scores(x), _direct_scores(canon, x.double(), d4, elements))
    assert canon.lean_scores(x, d4, elements) is None, "float32 images for float64 weights: no lean scores"


@pytest.mark.parametrize("size", [8, 16])  # 8×8: the canonicalizer's pool is skipped; 16×16: it pools 8×8 to 4×4
def test_learned_canonicalization_stays_exact_when_the_batch_size_changes(size: int) -> None:
    # One wrapped model called with alternating layouts and moved inputs: cached gathers must not leak across them.
    torch.manual_seed(1)
    wrapped = symwrap.wrap(SmallCNN(size).eval(), "d4", "canonicalization").eval()
    group = symwrap.get_group("d4")
    for batch in (2, 5, 2):
        x = torch.randn(batch, 3, size, size)
        reference = wrapped(x)
        for moved_x in _moved_images(group, x):
            assert_close(wrapped(moved_x), reference, rtol=1e-5, atol=1e-5)
