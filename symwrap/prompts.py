"""Checks shared by the zero-shot heads of the backbone plugins (open_clip, transformers' CLIPModel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

from symwrap.errors import ConfigError

__all__ = ["Template", "validate_prompts"]

#: A prompt template: a format string with a ``{}`` slot, or a callable ``name -> prompt`` (open_clip's OpenAI
#: templates are lambdas).
Template = Union[str, Callable[[str], str]]


def validate_prompts(
    class_names: Sequence[str], templates: Sequence[Template], *, allow_callables: bool = False
) -> None:
    """Raise :class:`ConfigError` for empty or non-string class names, or templates without a ``{}`` slot.

    Args:
        class_names: Class names in output order.
        templates: Format strings such as ``"a photo of a {}."`` (and callables when ``allow_callables``).
        allow_callables: Accept callables ``name -> prompt`` as templates (not mixed with strings).
    """
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ConfigError("invalid option 'class_names': expected a non-empty list of class names, e.g. ['cat', 'dog']")
    bad = [n for n in class_names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"invalid option 'class_names': {bad[0]!r} is not a non-empty string")
    if isinstance(templates, str) or len(templates) == 0:
        raise ConfigError("invalid option 'templates': expected a non-empty list such as ['a photo of a {}.']")
    if allow_callables and len({callable(t) for t in templates}) > 1:
        raise ConfigError("invalid option 'templates': mix of strings and callables; use one kind")
    hint = " (or pass callables name -> prompt)" if allow_callables else ""
    for template in templates:
        if allow_callables and callable(template):
            continue
        if not isinstance(template, str) or "{}" not in template:
            raise ConfigError(
                f"invalid option 'templates': {template!r} has no '{{}}' slot for the class name; "
                f"write templates like 'a photo of a {{}}.'{hint}"
            )
