"""Words and entity spans of raw text, in the standard library only: the same code runs inside
nlu-deploy and, copied beside it, inside the Triton post-processor (whose Python environment
need not have nlu-deploy), so a served model finds exactly the entities `predict` finds.

Raw text -> words: split at whitespace, with character offsets (Python indices, i.e. Unicode
code points). Tags -> entities: conlleval's BIO rules. Entity text: the words' span without the
punctuation glued to its first or last word.
"""

from __future__ import annotations

import re

# Punctuation glued to a word ("tonight.", "(Paris") is not part of an entity's surface text.
_LEADING_PUNCTUATION = "\"'([{«“‘¿¡"
_TRAILING_PUNCTUATION = ",;:!?\"')]}»”’"


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities as (type, first word, end word exclusive), with conlleval's rules (seqeval's
    default mode): B-X starts an entity; I-X continues an X entity and otherwise starts one;
    O, or a tag of another type, ends it."""
    spans = []
    current: tuple[str, int] | None = None
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and current is not None and current[0] == kind:
            continue
        if current is not None:
            spans.append((current[0], current[1], index))
            current = None
        if prefix in ("B", "I"):
            current = (kind, index)
    return spans


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Whitespace-separated words with their character offsets."""
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Offsets without the punctuation glued to the entity's first or last word. A final full
    stop is kept when the last word has another one (abbreviations such as "p.m.")."""
    while end - start > 1:
        if text[end - 1] in _TRAILING_PUNCTUATION:
            end -= 1
        elif text[end - 1] == "." and text[start:end].split()[-1].count(".") == 1:
            end -= 1
        else:
            break
    while end - start > 1 and text[start] in _LEADING_PUNCTUATION:
        start += 1
    return start, end


def text_entities(text: str, tags: list[str], word_scores: list[float]) -> list[dict]:
    """The entities of `text` whose whitespace words carry `tags`: type, surface text, offsets
    [start, end) into `text` and score (mean of the words' tag probabilities)."""
    words = split_words(text)
    found = []
    for kind, first, end in entity_spans(tags):
        start, stop = trim_span(text, words[first][1], words[end - 1][2])
        scores = word_scores[first:end]
        found.append(
            {
                "type": kind,
                "text": text[start:stop],
                "start": start,
                "end": stop,
                "score": float(sum(scores) / len(scores)),
            }
        )
    return found
