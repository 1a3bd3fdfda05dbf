"""MMLU-Pro's three-step answer extraction chain, in linear time.

MMLU-Pro's evaluation scripts try, in order:

1. ``re.search(r"answer is \\(?([A-J])\\)?", text)``;
2. ``re.search(r".*[aA]nswer:\\s*([A-J])", text)``: the first line holding an ``answer:``
   followed (after optional whitespace, which may cross newlines) by a letter, and on that line
   the last such ``answer:``;
3. ``re.search(r"\\b[A-J]\\b(?!.*\\b[A-J]\\b)", text, re.DOTALL)``: the last standalone letter.

Steps 2 and 3 are quadratic as written (a long line or a long text with many letters takes
minutes); :func:`extract_choice` returns the same letter with linear scans.
"""

from __future__ import annotations

import re

__all__ = ["LETTERS", "extract_choice"]

LETTERS = "ABCDEFGHIJ"

_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r"[aA]nswer:")
_SPACE_THEN_LETTER = re.compile(r"\s*([A-J])")
_LONE_LETTER = re.compile(r"\b[A-J]\b")


def extract_choice(text: str) -> str | None:
    """Return the letter (A–J) MMLU-Pro's chain extracts from ``text``, or ``None``."""
    found = _ANSWER_IS.search(text)
    if found:
        return found.group(1)
    letter = _answer_colon(text)
    if letter is not None:
        return letter
    return _last_lone_letter(text)


def _answer_colon(text: str) -> str | None:
    """Step 2: the last qualifying ``answer:`` on the first line that has one.

    ``"answer:"`` cannot overlap itself, so ``finditer`` sees every occurrence; the whitespace
    runs scanned after distinct occurrences are disjoint, so the whole scan is linear.
    """
    letter: str | None = None
    line_end = -1
    for colon in _ANSWER_COLON.finditer(text):
        if letter is not None and colon.start() > line_end:
            break
        after = _SPACE_THEN_LETTER.match(text, colon.end())
        if after is None:
            continue
        if letter is None:
            line_end = text.find("\n", colon.start())
            if line_end < 0:
                line_end = len(text)
        letter = after.group(1)
    return letter


def _last_lone_letter(text: str) -> str | None:
    """Step 3: the last ``\\b[A-J]\\b`` in the text."""
    last: str | None = None
    for last_match in _LONE_LETTER.finditer(text):
        last = last_match.group(0)
    return last
