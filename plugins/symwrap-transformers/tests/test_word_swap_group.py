"""Word-swap groups: group axioms, the action on raw text, case forms, and every malformed word list."""

from __future__ import annotations

import itertools

import pytest
import torch
from symwrap_transformers import GENDER_PAIRS, WordSwapAction, WordSwapGroup

import symwrap
from symwrap.actions.text import TextBatch
from symwrap.errors import ConfigError

TEXT = "He said his wife and HE met. Mr Smith's son, a grandson of the king, married the queen."


@pytest.mark.parametrize(
    "group",
    [WordSwapGroup([["he", "she"], ["king", "queen"]]), WordSwapGroup([["a", "b", "c"], ["x", "y"]])],
    ids=["pairs", "cycles-3-and-2"],
)
def test_group_axioms_and_action_property(group: WordSwapGroup) -> None:
    elements = group.elements()
    assert group.order() == (2 if group.period == 2 else 6)
    assert bool(group.equal(elements[0], group.identity()))
    text = "a b c x y he king queen she z"
    for a, b, c in itertools.product(elements, repeat=3):
        ab = group.compose(a, b)
        assert bool((elements == ab).any())  # closure
        assert bool(group.equal(group.compose(ab, c), group.compose(a, group.compose(b, c))))  # associativity
        # action: (a·b)·x == a·(b·x)  (b acts first)
        assert group.apply_to_text(text, int(ab)) == group.apply_to_text(group.apply_to_text(text, int(b)), int(a))
    for a in elements:
        assert bool(group.equal(group.compose(a, group.inverse(a)), group.identity()))
    # every element acts distinctly on a generic text
    images = {group.apply_to_text(text, int(k)) for k in elements}
    assert len(images) == group.order()


def test_swaps_whole_words_keeps_punctuation_and_case_forms() -> None:
    group = symwrap.get_group("gender_swap")
    assert isinstance(group, WordSwapGroup) and group.order() == 2
    swapped = group.apply_to_text(TEXT, 1)
    assert (
        swapped
        == "She said his husband and SHE met. Mrs Smith's daughter, a granddaughter of the queen, married the king."
    )
    assert group.apply_to_text(swapped, 1) == TEXT
    assert group.apply_to_text("hE theme shed", 1) == "hE theme shed"  # other spellings and sub-words untouched


def test_registered_word_swap_takes_words_and_the_action_moves_text_batches() -> None:
    group = symwrap.get_group("word_swap", words=[["cat", "dog"]])
    action = group.default_action()
    assert isinstance(action, WordSwapAction)
    x = TextBatch(["a cat", "the dog and the cat"])
    out = action.apply(x, torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0]), group)
    assert isinstance(out, TextBatch) and list(out) == ["the cat and the dog", "a dog", "the dog and the cat"]


def test_gender_pairs_form_a_valid_group() -> None:
    assert len(WordSwapGroup(GENDER_PAIRS).cycles) == len(GENDER_PAIRS)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([["he", "she"], ["him", "her"], ["his", "her"]], r"'her' appears in cycle 1 \['him', 'her'\] and in cycle 2"),
        ([["he", "she", "He"]], r"'He' appears twice in cycle 0"),
        ([["he", "he"]], r"'he' appears twice in cycle 0"),
        ([["he"]], r"cycle 0 \['he'\] has fewer than two words"),
        ([["ice cream", "cake"]], r"'ice cream' in cycle 0 is not a single word"),
        ([], r"expected a non-empty list of cycles"),
        ("he she", r"expected a non-empty list of cycles"),
        (["he", "she"], r"cycle 0 is 'he', not a list of words"),
    ],
)
def test_malformed_word_lists(words: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'words': .*" + message):
        WordSwapGroup(words)  # type: ignore[arg-type]


def test_case_forms_that_collide_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"form 'I' of 'i' .* pass case_variants=False"):
        WordSwapGroup([["i", "we"]])
    assert WordSwapGroup([["i", "we"]], case_variants=False).apply_to_text("i and I", 1) == "we and I"


def test_token_ids_instead_of_text_get_a_clear_error() -> None:
    group = symwrap.get_group("gender_swap")
    with pytest.raises(Exception, match=r"word swaps act before tokenization.*TextEncoder"):
        group.default_action().check(torch.zeros(2, 5, dtype=torch.long), group)
