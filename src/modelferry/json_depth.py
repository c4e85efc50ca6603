"""How deep JSON nests, counted without parsing it and without recursion.

Python's `json` recurses once per level, so a body of a hundred thousand brackets exhausts
the stack (`RecursionError`) before any schema is checked. Everything modelferry reads from
someone it does not control (device messages, package manifests, config files) asks this
first and refuses what nests deeper than its format needs.
"""

from __future__ import annotations

import re

# JSON strings, so that brackets inside them do not count as nesting (unrolled loop: linear).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(data: bytes | str, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in JSON `data`.

    Args:
        data: JSON text or its UTF-8 bytes; it need not be valid JSON.
        stop_above: stop counting as soon as the depth passes this (the answer is then
            `stop_above + 1`), so a hostile input costs no more than it must.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest
