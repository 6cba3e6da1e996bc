"""Causal language models under word swaps: next-token logits made equivariant by permuting the vocabulary.

``NextTokenModel(lm, tokenizer)`` takes raw text and returns the next-token logits ``(B, V)``. Wrapped with a
word-swap group and ``output=VocabularySwapAction(tokenizer)``, the symmetrized model satisfies
``F(g·text) = g·F(text)``: swapping "he" and "she" in the prompt swaps the logits of the tokens "he" and "she"
(and every other single-token pair) in the prediction, exactly.

Multi-token words: a word the tokenizer splits ("chairwoman" -> "chair", "##woman") has no vocabulary entry of its
own, and its sub-tokens are shared with other words, so its entries are not permuted (see
:attr:`VocabularySwapAction.skipped`). The text is still swapped before tokenization, so the logits of those
sub-tokens are averaged over the swapped prompts (invariant rather than swapped); score multi-token continuations
at the sequence level (the sum of their tokens' log-probabilities) if they must swap too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.actions.base import Action
from symwrap.errors import ConfigError
from symwrap.groups.base import Group
from symwrap_transformers.text import check_tokenizer_matches
from symwrap_transformers.word_swap import _CASES, WordSwapGroup

__all__ = ["NextTokenModel", "VocabularySwapAction"]


class NextTokenModel(nn.Module):
    """A causal LM that takes raw text and returns the logits of the next token ``(B, V)``.

    Texts are right-padded and the logits are read at each text's last real token, so padding does not change
    them (up to float round-off).

    Args:
        model: A causal LM (``AutoModelForCausalLM``).
        tokenizer: Its tokenizer; when it has no pad token, its EOS token id is used for padding.
        add_special_tokens: Passed to the tokenizer (``False``: the prompt's own tokens only).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, add_special_tokens: bool = False) -> None:
        super().__init__()
        check_tokenizer_matches(model, tokenizer)
        self.model, self.tokenizer, self.add_special_tokens = model, tokenizer, add_special_tokens

    def forward(self, text: Sequence[str]) -> Tensor:
        """Next-token logits ``(B, V)`` after each of the ``B`` prompts."""
        device = next(self.model.parameters()).device
        encoded = [self.tokenizer.encode(t, add_special_tokens=self.add_special_tokens) for t in text]
        if any(len(ids) == 0 for ids in encoded):
            raise ConfigError("NextTokenModel got an empty prompt; every text needs at least one token")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        pad = 0 if pad is None else pad
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(input_ids)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids, device=device)
            mask[i, : len(ids)] = 1
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
        last = mask.sum(dim=1) - 1
        return logits[torch.arange(len(encoded), device=device), last]


class VocabularySwapAction(Action):
    """Moves next-token logits ``(B, V)`` by word-swap elements: permutes the entries of single-token words.

    Convention:
        For element ``k`` of a :class:`WordSwapGroup`, ``π_k`` maps the token id of word ``w_i`` (position ``i``
        of its cycle) to the id of ``w_(i+k)``, for every spelling of the word that is one token (lowercase,
        Title, UPPER, each with and without a leading space); all other ids are fixed. ``(g·ℓ)[π_k(v)] = ℓ[v]``,
        so ``g·ℓ = ℓ[..., π_(-k)]``. Used as ``output=`` of ``symwrap.wrap``: outputs are pulled back with
        ``g⁻¹``, making the wrapped model exactly equivariant. Cycles with a spelling that is not a single token
        are left out of the permutation and listed in :attr:`skipped` (see the module docstring).

    Args:
        tokenizer: The tokenizer of the model whose logits are moved.
    """

    name = "vocabulary"
    layout = "next-token logits (B, V)"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.skipped: list[str] = []
        self._tables: dict[int, Tensor] = {}

    def table(self, group: WordSwapGroup) -> Tensor:
        """``(L, V)`` int64: row ``k`` is ``π_k`` as an index (``π_k[v]``)."""
        key = id(group)
        if key not in self._tables:
            self._tables[key] = self._build(group)
        return self._tables[key]

    def _build(self, group: WordSwapGroup) -> Tensor:
        size = len(self.tokenizer)
        owner: dict[int, tuple[int, int]] = {}
        self.skipped = []
        for c, cycle in enumerate(group.cycles):
            for case in _CASES.values() if group.case_variants else [_CASES["lower"]]:
                for prefix in ("", " "):
                    ids = [self.tokenizer.encode(prefix + case(w), add_special_tokens=False) for w in cycle]
                    if any(len(t) != 1 for t in ids) or len({t[0] for t in ids}) != len(ids):
                        self.skipped.extend(case(w) for w, t in zip(cycle, ids) if len(t) != 1)
                        continue
                    for i, (token,) in enumerate(ids):
                        if owner.setdefault(token, (c, i)) != (c, i):
                            raise ConfigError(
                                f"token {self.tokenizer.convert_ids_to_tokens(token)!r} stands for two different "
                                f"words of the word-swap group ({cycle[i]!r} and "
                                f"{group.cycles[owner[token][0]][owner[token][1]]!r}); it cannot be permuted"
                            )
        self.skipped = sorted(set(self.skipped))
        rows = []
        for k in range(group.period):
            perm = torch.arange(size)
            for token, (c, i) in owner.items():
                cycle = group.cycles[c]
                target = self.tokenizer.encode(
                    _spelling_like(self.tokenizer, token, cycle[i], cycle[(i + k) % len(cycle)]),
                    add_special_tokens=False,
                )
                perm[token] = target[0]
            rows.append(perm)
        return torch.stack(rows)

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        if not isinstance(group, WordSwapGroup):
            return f"the vocabulary action moves word-swap elements, not elements of group {group.name!r}."
        if not isinstance(x, Tensor) or x.ndim != 2:
            return "expected next-token logits (B, V); use symwrap_transformers.NextTokenModel."
        if x.shape[-1] < len(self.tokenizer):
            return f"the logits have {x.shape[-1]} entries but the tokenizer has {len(self.tokenizer)} tokens."
        return None

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        assert isinstance(group, WordSwapGroup)
        table = self.table(group).to(x.device)
        inverse = table[torch.remainder(-elements, group.period)]  # (R, V_tok): g·ℓ = ℓ[π_(-k)]
        rows = x[src]
        if rows.shape[-1] > inverse.shape[-1]:  # logits beyond the tokenizer's vocabulary stay in place
            extra = torch.arange(inverse.shape[-1], rows.shape[-1], device=x.device).expand(len(inverse), -1)
            inverse = torch.cat([inverse, extra], dim=-1)
        return rows.gather(-1, inverse)


def _spelling_like(tokenizer: Any, token: int, word: str, target: str) -> str:
    """The spelling of ``target`` in the same case and prefix form as ``token`` (a spelling of ``word``)."""
    for case in _CASES.values():
        for prefix in ("", " "):
            if tokenizer.encode(prefix + case(word), add_special_tokens=False) == [token]:
                return prefix + case(target)
    raise AssertionError("token not found among the spellings of its word")
