"""Word-swap groups: lists of interchangeable words acting on raw text, before tokenization.

A group is given by *cycles* of interchangeable words, e.g. ``[["he", "she"], ["man", "woman"]]`` (the
fairness setting of Basu et al., Equi-Tuning, AAAI 2023, arXiv 2210.06475). Element ``k`` replaces every
word at position ``i`` of a cycle by the word at position ``(i + k) mod n`` of the same cycle, in all cycles
at once; the group is the cyclic group Z_L with L the least common multiple of the cycle lengths (Z_2 for
pairs). Because the swap happens on the text, a word that the tokenizer splits into several tokens
("grandmother" -> "grand", "##mother") is swapped whole; the papers' GPT-2 code swapped only first tokens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.actions.text import TextBatch
from symwrap.errors import ConfigError
from symwrap.groups.base import FiniteGroup

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["GENDER_PAIRS", "WordSwapAction", "WordSwapGroup", "gender_swap"]

_WORD = re.compile(r"\w+")

#: Gendered word pairs (lowercase). "his"/"her"/"hers" are left out: "her" is the counterpart of both
#: "him" and "his", and a word can belong to one cycle only (its swap must be a function).
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"),
    ("him", "her"),
    ("himself", "herself"),
    ("man", "woman"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("father", "mother"),
    ("fathers", "mothers"),
    ("son", "daughter"),
    ("sons", "daughters"),
    ("brother", "sister"),
    ("brothers", "sisters"),
    ("husband", "wife"),
    ("husbands", "wives"),
    ("king", "queen"),
    ("kings", "queens"),
    ("uncle", "aunt"),
    ("nephew", "niece"),
    ("grandfather", "grandmother"),
    ("grandson", "granddaughter"),
    ("gentleman", "lady"),
    ("gentlemen", "ladies"),
    ("mr", "mrs"),
    ("male", "female"),
    ("boyfriend", "girlfriend"),
    ("actor", "actress"),
    ("waiter", "waitress"),
)

_CASES = {
    "lower": lambda w: w,
    "title": lambda w: w[:1].upper() + w[1:],
    "upper": lambda w: w.upper(),
}


class WordSwapGroup(FiniteGroup):
    """Z_L acting on text by swapping words within cycles of interchangeable words.

    Convention:
        Codes are int64 scalars ``k`` in ``0..L-1`` (listed in that order, identity first), L the least
        common multiple of the cycle lengths. Element ``k`` maps the word at position ``i`` of a cycle of
        length ``n`` to position ``(i + k) mod n``. ``compose(a, b) = (a + b) mod L``, the inverse is
        ``(-a) mod L``. Text is split into words (maximal runs of ``\\w`` characters); everything between
        words (spaces, punctuation) is kept, so the action is a permutation of strings and exact. With
        ``case_variants`` (default) the lowercase, Title and UPPER forms of each word are swapped to the
        same form of the partner ("He" -> "She", "HE" -> "SHE"); other spellings are left alone.

    Args:
        words: The cycles, e.g. ``[["he", "she"], ["man", "woman"]]``; each word a single ``\\w+`` word,
            no word in two cycles, no duplicates (case-insensitive).
        case_variants: Also swap the Title and UPPER forms.

    Raises:
        ConfigError: ``words`` is malformed (the message names the cycle and the word).
    """

    code_shape = ()
    code_dtype = torch.int64
    name = "word_swap"

    def __init__(self, words: Sequence[Sequence[str]], *, case_variants: bool = True) -> None:
        self.cycles = _validate(words)
        self.case_variants = case_variants
        self.period = math.lcm(*(len(c) for c in self.cycles))
        self._table = _table(self.cycles, case_variants)

    def __repr__(self) -> str:
        return f"WordSwapGroup(cycles={len(self.cycles)}, order={self.period})"

    def elements(self) -> Tensor:
        return torch.arange(self.period, dtype=torch.int64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, self.period)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.remainder(-a, self.period)

    def index_of(self, codes: Tensor) -> Tensor:
        return torch.remainder(codes, self.period).long()

    def swap_word(self, word: str, k: int) -> str:
        """The image of one word under element ``k`` (the word itself when it is in no cycle)."""
        hit = self._table.get(word)
        if hit is None:
            return word
        cycle, position, case = hit
        words = self.cycles[cycle]
        return _CASES[case](words[(position + k) % len(words)])

    def apply_to_text(self, text: str, k: int) -> str:
        """Element ``k`` applied to every word of ``text``."""
        if k % self.period == 0:
            return text
        return _WORD.sub(lambda m: self.swap_word(m.group(), k), text)

    def default_action(self) -> Action:
        return WordSwapAction()


class WordSwapAction(Action):
    """Moves raw text (a list of ``B`` strings) by word-swap elements.

    Convention:
        ``out[r] = apply_to_text(x[src[r]], elements[r])`` (see :class:`WordSwapGroup`). Acts on inputs
        only: outputs of text models (class scores, embeddings) are invariant; for next-token logits use
        :class:`symwrap_transformers.VocabularySwapAction`.
    """

    name = "text"
    layout = "raw text (a list of B strings, before tokenization)"

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        if output:
            return "word swaps move text, not model outputs."
        if not isinstance(x, TextBatch):
            return (
                "expected the raw sentences as a list of strings; word swaps act before tokenization, so pass "
                "text to a model that tokenizes it (symwrap_transformers.TextEncoder(model, tokenizer)), not token ids."
            )
        if not isinstance(group, WordSwapGroup):
            return f"the text action moves word-swap elements, not elements of group {group.name!r}."
        return None

    def apply(self, x: Any, src: Tensor, elements: Tensor, group: Group) -> TextBatch:
        assert isinstance(group, WordSwapGroup)
        return TextBatch(group.apply_to_text(x[s], k) for s, k in zip(src.tolist(), elements.tolist()))


def gender_swap(*, case_variants: bool = True) -> WordSwapGroup:
    """The word-swap group of :data:`GENDER_PAIRS` (Z_2 swapping he/she, man/woman, ...)."""
    return WordSwapGroup(GENDER_PAIRS, case_variants=case_variants)


# ---------------------------------------------------------------------------------------------- validation
def _validate(words: Any) -> tuple[tuple[str, ...], ...]:
    example = "e.g. words=[['he', 'she'], ['man', 'woman']]"
    if isinstance(words, (str, bytes)) or not isinstance(words, Sequence) or len(words) == 0:
        raise ConfigError(f"invalid option 'words': expected a non-empty list of cycles of words, {example}")
    cycles: list[tuple[str, ...]] = []
    owner: dict[str, int] = {}
    for index, cycle in enumerate(words):
        if isinstance(cycle, (str, bytes)) or not isinstance(cycle, Sequence):
            raise ConfigError(f"invalid option 'words': cycle {index} is {cycle!r}, not a list of words; {example}")
        if len(cycle) < 2:
            raise ConfigError(
                f"invalid option 'words': cycle {index} {list(cycle)!r} has fewer than two words; a cycle lists "
                "words that are swapped for each other"
            )
        lowered = []
        for word in cycle:
            if not isinstance(word, str) or not _WORD.fullmatch(word):
                raise ConfigError(
                    f"invalid option 'words': {word!r} in cycle {index} is not a single word (letters, digits and "
                    "'_' only, no spaces or punctuation)"
                )
            key = word.lower()
            if key in lowered:
                raise ConfigError(
                    f"invalid option 'words': {word!r} appears twice in cycle {index} {list(cycle)!r}; "
                    "list each word once"
                )
            if key in owner:
                first = owner[key]
                raise ConfigError(
                    f"invalid option 'words': {word!r} appears in cycle {first} {list(words[first])!r} and in "
                    f"cycle {index} {list(cycle)!r}; a word can belong to one cycle only (its swap must be unique)"
                )
            owner[key] = index
            lowered.append(key)
        cycles.append(tuple(lowered))
    return tuple(cycles)


def _table(cycles: tuple[tuple[str, ...], ...], case_variants: bool) -> dict[str, tuple[int, int, str]]:
    cases = list(_CASES) if case_variants else ["lower"]
    table: dict[str, tuple[int, int, str]] = {}
    for c, cycle in enumerate(cycles):
        for case in cases:
            form = _CASES[case]
            for i, word in enumerate(cycle):
                spelled = form(word)
                previous = table.get(spelled)
                if previous is None:
                    table[spelled] = (c, i, case)
                    continue
                # the same spelling for two cases is harmless only if both cases swap to the same spellings
                same = previous[:2] == (c, i) and all(_CASES[previous[2]](w) == form(w) for w in cycle)
                if not same:
                    raise ConfigError(
                        f"invalid option 'words': the {case} form {spelled!r} of {word!r} (cycle {c}) is also a "
                        "form of another entry, so its swap would not be unique; pass case_variants=False"
                    )
    return table
