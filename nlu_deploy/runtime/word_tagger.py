"""Token classification (slot filling, NER) at the word level, for PyTorch and ONNX alike.

Words -> sub-words: the first sub-word of each word carries the word's label; the other
sub-words, the special tokens and the padding are ignored (label -100 in training, not read
at inference). In training, sentences longer than max_length are cut and the gold entities
cut are counted. At inference nothing is cut: a long sentence is tagged in overlapping windows
of whole words, each word taking its logits from the window where it sits most centrally (so
it has context on both sides).

Raw text -> entities: the text is split on whitespace (the same words the training data
gives), tagged, and BIO spans are turned into entities with character offsets into the
original string (Python indices, i.e. Unicode code points).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from nlu_deploy.errors import ModelError
from nlu_deploy.portable.spans import entity_spans, split_words, text_entities, trim_span  # noqa: F401 (re-exported)
from nlu_deploy.portable.tag_decoding import TagDecoder
from nlu_deploy.runtime.sessions import TextClassifier, TorchTextClassifier, encode, pad_batch

IGNORED = -100  # PyTorch's cross-entropy ignore_index: positions that carry no label
NO_SUBWORD = -1  # a word with no sub-word position (cut by truncation, or nothing to encode)


@lru_cache(maxsize=16)
def _decoder(tags: tuple[str, ...]) -> TagDecoder:
    return TagDecoder(list(tags))


def decoder_for(id2label: dict[int, str], width: int) -> TagDecoder:
    """The BIO decoder of a model's first `width` tags (an evaluation's label map may hold more:
    gold tags the model never had)."""
    return _decoder(tuple(id2label[i] for i in range(width)))


@dataclass
class EncodedWords:
    features: list[dict[str, list[int]]]  # input ids etc., unpadded
    first_subword: list[list[int]]  # per sentence, per word: position of its first sub-word, or NO_SUBWORD
    truncated: int  # sentences cut at max_length


def encode_words(tokenizer, sentences: list[list[str]], max_length: int) -> EncodedWords:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("token classification needs a fast (Rust) tokenizer to map sub-words back to words.")
    if not sentences:  # the tokenizer reads an empty batch as one unbatched input
        return EncodedWords([], [], 0)
    features: list[dict[str, list[int]]] = [{} for _ in sentences]
    first_subword: list[list[int]] = [[] for _ in sentences]
    full = tokenizer(sentences, is_split_into_words=True, truncation=False, verbose=False)
    long_rows = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
    cut = (
        tokenizer([sentences[i] for i in long_rows], is_split_into_words=True, truncation=True, max_length=max_length)
        if long_rows
        else None
    )
    sources = {i: (full, i) for i in range(len(sentences))}
    sources.update({row: (cut, k) for k, row in enumerate(long_rows)})
    for row, (encoding, k) in sources.items():
        features[row] = {key: encoding[key][k] for key in encoding.keys()}
        first = [NO_SUBWORD] * len(sentences[row])
        for position, word in enumerate(encoding.word_ids(k)):
            if word is not None and first[word] == NO_SUBWORD:
                first[word] = position
        first_subword[row] = first
    return EncodedWords(features, first_subword, len(long_rows))


def word_windows(subword_counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) whose sub-words fit in `budget`, consecutive ones overlapping by
    about a quarter of the budget. A single word longer than the budget gets a window of its
    own (its first sub-word, the one that matters, always fits)."""
    windows, start, words = [], 0, len(subword_counts)
    while True:
        end, used = start, 0
        while end < words and (used + subword_counts[end] <= budget or end == start):
            used += subword_counts[end]
            end += 1
        windows.append((start, end))
        if end >= words:
            return windows
        back, overlap = end, 0
        while back - 1 > start and overlap + subword_counts[back - 1] <= budget // 4:
            back -= 1
            overlap += subword_counts[back]
        start = back  # always past the previous start: the loop ends


def aligned_labels(first_subword: list[int], tag_ids: list[int], length: int) -> list[int]:
    """One label per sub-word position: the word's tag on its first sub-word, IGNORED elsewhere."""
    labels = [IGNORED] * length
    for position, tag_id in zip(first_subword, tag_ids):
        if position != NO_SUBWORD:
            labels[position] = tag_id
    return labels


def cut_entities(first_subword: list[int], tags: list[str]) -> int:
    """Gold entities with at least one word the model never sees."""
    return sum(any(first_subword[i] == NO_SUBWORD for i in range(start, end)) for _, start, end in entity_spans(tags))


@dataclass
class Entity:
    type: str
    text: str
    start: int  # character offsets into the input text: text[start:end] == self.text
    end: int
    score: float  # mean probability of the predicted tags over the entity's words

    def to_json(self) -> dict:
        return {**asdict(self), "score": round(self.score, 6)}


class WordTagger:
    """Tags words (and raw text) with any backend whose run_batch returns [batch, seq, labels]
    logits: the ONNX session and PyTorch wrappers of runtime serve both tasks unchanged."""

    def __init__(self, backend: TextClassifier, token_output: str = "logits", sentence_output: str | None = None):
        self.backend = backend
        self.token_output, self.sentence_output = token_output, sentence_output
        self.last_sentence_logits: np.ndarray | None = None  # sentence_output per sentence, last call
        self.tokenizer = backend.tokenizer
        self.id2label = backend.id2label
        self.decoder = decoder_for({int(k): v for k, v in self.id2label.items()}, len(self.id2label))
        self.max_length = backend.max_length
        self.last_truncated = 0  # nothing is cut at inference (see the module docstring)
        self.last_windowed = 0  # sentences of the last call tagged in several windows

    def _windows(self, sentences: list[list[str]]) -> list[tuple[int, int, int]]:
        """(sentence, first word, end word) pieces that each fit in max_length."""
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        counted = self.tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
        pieces, self.last_windowed = [], 0
        for row, words in enumerate(sentences):
            counts = [0] * len(words)
            for word in counted.word_ids(row):
                if word is not None:
                    counts[word] += 1
            windows = word_windows(counts, budget) if sum(counts) > budget else [(0, len(words))]
            self.last_windowed += len(windows) > 1
            pieces += [(row, start, end) for start, end in windows]
        return pieces

    def word_logits(self, sentences: list[list[str]], batch_size: int = 64) -> list[np.ndarray]:
        """Per sentence, a [words, labels] array of the first sub-words' logits; rows of words
        with no sub-word at all are NaN."""
        result = [np.full((len(words), len(self.id2label)), np.nan, dtype=np.float32) for words in sentences]
        centrality = [np.full(len(words), -1) for words in sentences]  # of the window each word took
        pieces = self._windows([words for words in sentences if words]) if any(sentences) else []
        rows = [i for i, words in enumerate(sentences) if words]  # empty sentences: nothing to run
        encoded = encode_words(self.tokenizer, [sentences[rows[r]][a:b] for r, a, b in pieces], self.max_length)
        order = sorted(range(len(pieces)), key=lambda k: len(encoded.features[k]["input_ids"]))
        sentence_sums: list = [None] * len(sentences)  # a joint model's intent logits, summed over windows
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            outputs = self.backend.run_outputs(
                pad_batch([encoded.features[k] for k in chunk], self.tokenizer.pad_token_id or 0)
            )
            logits = outputs[self.token_output] if self.token_output in outputs else next(iter(outputs.values()))
            for index, (k, token_logits) in enumerate(zip(chunk, logits)):
                row, first, end = pieces[k]
                row = rows[row]
                if self.sentence_output:
                    value = outputs[self.sentence_output][index]
                    sentence_sums[row] = value if sentence_sums[row] is None else sentence_sums[row] + value
                for offset, position in enumerate(encoded.first_subword[k]):
                    word = first + offset
                    central = min(word - first, end - 1 - word)
                    if position != NO_SUBWORD and central > centrality[row][word]:
                        result[row][word] = token_logits[position]
                        centrality[row][word] = central
        if self.sentence_output and sentences:
            # An empty sentence still gets the model's answer for an empty text (as a classifier
            # would give, and as a served model gives); a sentence in several windows gets the
            # mean of its windows' sentence logits.
            empty = [i for i, value in enumerate(sentence_sums) if value is None]
            if empty:
                features = encode(self.tokenizer, [""] * len(empty), self.max_length).features
                answers = self.backend.run_outputs(pad_batch(features, self.tokenizer.pad_token_id or 0))
                for i, value in zip(empty, answers[self.sentence_output]):
                    sentence_sums[i] = value
            windows = np.maximum(np.bincount([rows[r] for r, _, _ in pieces], minlength=len(sentences)), 1)
            self.last_sentence_logits = np.array(
                [v / windows[i] for i, v in enumerate(sentence_sums)], dtype=np.float32
            ).reshape(len(sentences), -1)
        return result

    def decode(self, logits: np.ndarray) -> tuple[list[str], list[float]]:
        """Tags of one sentence (the best valid BIO sequence) and each chosen tag's probability."""
        return self.decoder.decode(logits) if len(logits) else ([], [])

    def tag(self, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        return [self.decode(x)[0] for x in self.word_logits(sentences, batch_size)]

    def predict_entities(self, texts: list[str], batch_size: int = 64) -> list[list[Entity]]:
        all_logits = self.word_logits([[w for w, _, _ in split_words(text)] for text in texts], batch_size)
        return [
            [Entity(**entity) for entity in text_entities(text, *self.decode(logits))]
            for text, logits in zip(texts, all_logits)
        ]

    def predict(self, texts: list[str], batch_size: int = 64) -> list[list[Entity]]:
        return self.predict_entities(texts, batch_size)


def torch_tagger(model, tokenizer, max_length: int, device: str = "cpu") -> WordTagger:
    return WordTagger(TorchTextClassifier(model, tokenizer, max_length, device))
