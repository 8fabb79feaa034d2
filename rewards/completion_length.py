"""How long a completion is: its token count when the trainer passes `completion_ids`, else its word count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def completion_tokens(text: str, row: dict[str, Any]) -> Sequence[Any]:
    """The completion's token ids (column `completion_ids`, which TRL passes), else its whitespace-split words.

    >>> completion_tokens("a b  c", {}), completion_tokens("ignored", {"completion_ids": [5, 6]})
    (['a', 'b', 'c'], [5, 6])
    """
    ids = row.get("completion_ids")
    return ids if ids is not None else text.split()
