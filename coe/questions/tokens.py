"""An offline token counter: tiktoken's ``cl100k_base``, from the copy litellm bundles.

Replayed usage and ``summary.json``'s ``tokenizer`` field use one tokenizer for every expert,
whatever model produced the text, so costs compare across experts. The BPE file ships inside
the installed litellm package (``litellm/litellm_core_utils/tokenizers/``); it is read on first
use, hash-checked, and never fetched from the network.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from coe.errors import UserError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TokenCounter"]

_ENCODING = "cl100k_base"
# tiktoken caches a BPE file under sha1(its URL); litellm ships the cache entry.
_CACHE_KEY = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_PREFIX_CACHE_SIZE = 256


class TokenCounter:
    """Counts tokens of text with ``cl100k_base``; loads the encoding on first use.

    :meth:`count_prompt` counts a prompt as ``count(prefix) + count(rest)`` and remembers the
    counts of recent prefixes, so the few-shot examples shared by a category's thousands of
    prompts are tokenized once.
    """

    name = f"tiktoken/{_ENCODING}"

    def __init__(self) -> None:
        self._prefix_counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        """Tokens in ``text``; special-token strings count as ordinary text."""
        if not text:
            return 0
        return len(_encoding().encode_ordinary(text))

    def count_prompt(self, prefix: str, rest: str) -> int:
        """Tokens in ``prefix + rest``, reusing the count of a prefix seen recently."""
        known = self._prefix_counts.get(prefix)
        if known is None:
            known = self.count(prefix)
            if len(self._prefix_counts) >= _PREFIX_CACHE_SIZE:
                self._prefix_counts.clear()
            self._prefix_counts[prefix] = known
        return known + self.count(rest)


@functools.cache
def _encoding() -> tiktoken.Encoding:
    import tiktoken

    directory = _bundled_directory()
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    try:
        return tiktoken.get_encoding(_ENCODING)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


def _bundled_directory() -> Path:
    """litellm's bundled tiktoken cache, located without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the offline tokenizer needs litellm installed (it bundles cl100k_base)")
    directory = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
    bpe = directory / _CACHE_KEY
    if not bpe.is_file():
        raise UserError(f"litellm's bundled {_ENCODING} file is missing: {bpe}")
    if hashlib.sha256(bpe.read_bytes()).hexdigest() != _SHA256:
        # tiktoken would then try to download it; refuse instead
        raise UserError(f"litellm's bundled {_ENCODING} file does not match its hash: {bpe}")
    return directory
