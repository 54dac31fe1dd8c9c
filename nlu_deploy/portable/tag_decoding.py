"""A sentence's tags from its per-word tag logits, with the BIO scheme enforced (numpy only: the
same code runs inside nlu-deploy and, copied beside it, inside the Triton post-processor).

Taking each word's best tag on its own can give sequences no training sentence has, such as
`O I-city` or `B-artist I-album`: the training data follows IOB2 strictly (tagged_data.py
rewrites every stray `I-X` as `B-X`). Here the tags are instead the most probable sequence in
which `I-X` only follows `B-X` or `I-X` (Viterbi over the words' log-probabilities, with those
transitions forbidden and every other one free). No parameter is learned, so nothing changes
in training or in the ONNX graph; a tag set without `I-` tags decodes exactly as the argmax.
Words with no logits at all (NaN rows: no sub-word reached the model) are tagged `O`.
"""

from __future__ import annotations

import numpy as np

OUTSIDE = "O"


class TagDecoder:
    def __init__(self, tags: list[str]):
        self.tags = list(tags)
        forbidden = np.zeros((len(tags), len(tags)), dtype=bool)  # [previous tag, next tag]
        for column, tag in enumerate(tags):
            prefix, _, kind = tag.partition("-")
            if prefix == "I":
                forbidden[:, column] = [other not in (f"B-{kind}", f"I-{kind}") for other in tags]
        self.transition_penalty = np.where(forbidden, -np.inf, 0.0)
        self.start_penalty = np.array([-np.inf if t.startswith("I-") else 0.0 for t in tags])
        self.outside = tags.index(OUTSIDE) if OUTSIDE in tags else None

    def log_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Per-word log-softmax; a NaN row becomes certain `O` (or no preference without `O`)."""
        logits = np.asarray(logits, dtype=np.float64)
        missing = np.isnan(logits).any(-1)
        shifted = np.nan_to_num(logits, nan=0.0)
        shifted = shifted - shifted.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        if missing.any():
            log_probs[missing] = -np.inf if self.outside is not None else 0.0
            if self.outside is not None:
                log_probs[missing, self.outside] = 0.0
        return log_probs

    def best_ids(self, emissions: np.ndarray) -> np.ndarray:
        """The most probable valid tag sequence of one sentence ([words, tags] log-probabilities)."""
        if not len(emissions):
            return np.zeros(0, dtype=int)
        score = emissions[0] + self.start_penalty
        back = np.zeros(emissions.shape, dtype=int)
        for word in range(1, len(emissions)):
            candidates = score[:, None] + self.transition_penalty  # [previous, next]
            back[word] = candidates.argmax(0)
            score = candidates.max(0) + emissions[word]
        best = [int(score.argmax())]
        for word in range(len(emissions) - 1, 0, -1):
            best.append(int(back[word, best[-1]]))
        return np.array(best[::-1], dtype=int)

    def decode(self, logits: np.ndarray) -> tuple[list[str], list[float]]:
        """Tags of one sentence and each chosen tag's probability (the entity scores' parts)."""
        emissions = self.log_probabilities(logits)
        ids = self.best_ids(emissions)
        chosen = np.exp(emissions[np.arange(len(ids)), ids])
        return [self.tags[i] for i in ids], chosen.tolist()
