"""Word-level examples with BIO tags, for slot filling and NER: JSON/JSONL/Parquet rows with a
list column of words and a list column of tags (CSV/TSV: space-separated strings), and
CoNLL-style files (one `word ... tag` line per word, a blank line between sentences).

Tag policy (documented in docs/tasks.md): tags are BIO (IOB2): `O`, `B-TYPE`, `I-TYPE`. Real data
often has an `I-X` that does not continue an X entity (after `O`, at the start, or after
another type: IOB1 habits, annotation slips). conlleval and seqeval read such a tag as the
start of a new X entity; we do the same and rewrite it as `B-X` when reading, so the model
learns one consistent scheme and the gold entities are exactly those conlleval would score.
The number of rewritten tags is reported. Other schemes (BIOES/BILOU `S-`, `E-`, `L-`, `U-`),
empty types and anything else are refused with the sentence and word that carry them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlu_deploy.data.tables import SUPPORTED_SUFFIXES, read_records, read_text, text_lines
from nlu_deploy.errors import DataError

CONLL_SUFFIXES = (".conll", ".iob", ".bio")
OUTSIDE = "O"


@dataclass(frozen=True)
class TaggedSentences:
    """Parallel lists of word sequences and tag sequences, plus where they came from."""

    words: list[list[str]]
    tags: list[list[str]]
    source: str
    repaired_tags: int = 0  # I-X tags rewritten as B-X (see the module docstring)
    empty_sentences: int = 0  # rows with no words: nothing to tag, skipped and counted
    intents: list[str] | None = None  # the joint task: one intent per sentence

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        """The sentences as plain text (words joined by single spaces)."""
        return [" ".join(words) for words in self.words]

    def subset(self, indices: list[int], source: str) -> TaggedSentences:
        intents = None if self.intents is None else [self.intents[i] for i in indices]
        return TaggedSentences(
            [self.words[i] for i in indices], [self.tags[i] for i in indices], source, intents=intents
        )

    def to_records(self, text_column: str, label_column: str, intent_column: str | None = None) -> list[dict]:
        records = [{text_column: w, label_column: t} for w, t in zip(self.words, self.tags)]
        if intent_column and self.intents is not None:
            for record, intent in zip(records, self.intents):
                record[intent_column] = intent
        return records


def normalise_bio(tags: list[str], where: str) -> tuple[list[str], int]:
    """The tags with every I-X that does not continue an X entity rewritten as B-X, and how
    many were rewritten. Raises DataError on tags outside the BIO scheme."""
    fixed, repaired, previous_type = [], 0, None
    for position, tag in enumerate(tags, start=1):
        prefix, dash, kind = tag.partition("-")
        if tag == OUTSIDE:
            fixed.append(tag)
            previous_type = None
            continue
        if prefix not in ("B", "I") or not dash or not kind.strip():
            hint = " (the letter O, not zero)" if tag == "0" else ""
            raise DataError(
                f"{where}, word {position}: tag {tag!r} is not BIO{hint}; tags must be O, B-TYPE or "
                "I-TYPE (BIOES/BILOU files need converting first)."
            )
        if prefix == "I" and previous_type != kind:
            tag = f"B-{kind}"
            repaired += 1
        fixed.append(tag)
        previous_type = kind
    return fixed, repaired


def _as_sequence(value: Any, column: str, where: str) -> list[str]:
    if isinstance(value, str):  # CSV/TSV cells: space-separated words or tags
        return value.split()
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise DataError(f"{where}: {column!r} must be a list of strings (or a space-separated string).")


def _read_conll(path: Path) -> list[tuple[list[str], list[str], int]]:
    """(words, tags, first line number) per sentence; the word is the first column and the
    tag the last, so CoNLL-2003's four-column files read as they are."""
    sentences, words, tags, start = [], [], [], 1
    for number, line in enumerate([*text_lines(read_text(path)), ""], start=1):
        columns = line.split()
        if not columns:
            if words:
                sentences.append((words, tags, start))
            words, tags, start = [], [], number + 1
            continue
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2:
            raise DataError(
                f"{path} line {number}: expected a word and a tag separated by whitespace, found {line.strip()!r}."
            )
        words.append(columns[0])
        tags.append(columns[-1])
    return sentences


def load_tagged_sentences(
    path: Path, words_column: str = "tokens", tags_column: str = "tags", intent_column: str | None = None
) -> TaggedSentences:
    """Words and BIO tags per sentence; with `intent_column` (the joint task) an intent too."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES and intent_column:
        raise DataError(
            f"{path}: CoNLL files carry no intent per sentence; the joint task reads CSV, TSV, JSON, "
            "JSONL or Parquet rows with words, tags and an intent."
        )
    raw_intents: list[str] = []
    if suffix in CONLL_SUFFIXES:
        raw = [(w, t, f"{path} line {line}") for w, t, line in _read_conll(path)]
        if not raw:
            raise DataError(f"{path} holds no sentences.")
    elif suffix in SUPPORTED_SUFFIXES:
        records = read_records(path)
        for column in (words_column, tags_column, *([intent_column] if intent_column else [])):
            if column not in records[0]:
                available = ", ".join(map(str, records[0].keys()))
                raise DataError(f"{path} has no column {column!r} (columns: {available}).")
        raw = []
        for number, record in enumerate(records, start=1):
            where = f"{path} example {number}"
            raw.append(
                (
                    _as_sequence(record.get(words_column), words_column, where),
                    _as_sequence(record.get(tags_column), tags_column, where),
                    where,
                )
            )
            if intent_column:
                intent = record.get(intent_column)
                if intent is None or intent == "" or isinstance(intent, (list, dict)):
                    raise DataError(f"{where}: {intent_column!r} is missing or not a single intent.")
                raw_intents.append(str(intent))
    else:
        readable = ", ".join((*SUPPORTED_SUFFIXES, *CONLL_SUFFIXES))
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'} for tagged data; use one of {readable}.")

    all_words, all_tags, all_intents, repaired, empty = [], [], [], 0, 0
    for index, (words, tags, where) in enumerate(raw):
        if len(words) != len(tags):
            raise DataError(f"{where}: {len(words)} words but {len(tags)} tags.")
        if not words:
            empty += 1
            continue
        tags, fixed = normalise_bio(tags, where)
        repaired += fixed
        all_words.append(words)
        all_tags.append(tags)
        if intent_column:
            all_intents.append(raw_intents[index])
    if not all_words:
        raise DataError(f"{path} holds no sentences with words.")
    return TaggedSentences(all_words, all_tags, str(path), repaired, empty, all_intents if intent_column else None)


def tag_list(data: TaggedSentences) -> list[str]:
    """O, then B-/I- for every entity type seen (sorted): the same data always gives the same
    ids, and a type seen only as single-word entities can still be continued at predict time."""
    types = sorted({tag[2:] for tags in data.tags for tag in tags if tag != OUTSIDE})
    if not types:
        raise DataError(f"{data.source} has no entities (every tag is O); a tagger needs at least one entity type.")
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in "BI"]


def random_holdout(data: TaggedSentences, fraction: float, seed: int) -> tuple[TaggedSentences, TaggedSentences]:
    """A seeded random `fraction` of the sentences (at least one) held out for validation."""
    if len(data) < 2:
        raise DataError(f"{data.source} is too small to hold out a validation split; pass --validation.")
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(data) * fraction))
    train = data.subset(sorted(order[n_held:]), f"{data.source} (train part)")
    held = data.subset(sorted(order[:n_held]), f"{data.source} (held-out {fraction:.0%})")
    # the counts describe the file as read; keep them with the training part
    return TaggedSentences(
        train.words, train.tags, train.source, data.repaired_tags, data.empty_sentences, train.intents
    ), held
