"""One chunk of rows in, its answers out: the step the local run and every Ray actor share, so
both write the same bytes.

Within the chunk the predictor groups texts of similar token length into each batch (less
padding) and puts the answers back in input order; a chunk of 4,000 rows keeps nearly all of
what sorting the whole file would gain (docs/bulk.md), and bounds the memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from nlu_deploy.bulk.row_sources import Chunk, ChunkRows


@dataclass
class ChunkAnswers:
    chunk: Chunk
    answers: list[str] = field(default_factory=list)  # a JSON object per good row, in input order
    odd_rows: list[str] = field(default_factory=list)  # a JSON object per bad or truncated row
    bad: int = 0  # rows with no answer
    truncated: int = 0  # answered from the first max-length tokens, as `predict` does
    windowed: int = 0  # slot taggers: read whole, in overlapping windows

    @property
    def rows(self) -> int:
        return len(self.answers) + self.bad

    def counts(self) -> dict:
        return {"rows": self.rows, "answered": len(self.answers), "bad": self.bad,
                "truncated": self.truncated, "windowed": self.windowed}  # fmt: skip


def answer_chunk(predictor, task, rows: ChunkRows, batch_size: int, with_ids: bool) -> ChunkAnswers:
    """The answers of one chunk's good rows, the list of its odd rows (sorted by line)."""
    result = ChunkAnswers(rows.chunk, bad=len(rows.bad))
    odd = [dict(row, answered=False) for row in rows.bad]
    if rows.texts:
        predictions = predictor.predict(rows.texts, batch_size)
        for row_id, text, prediction in zip(rows.ids, rows.texts, predictions):
            answer = task.prediction_json(text, prediction)
            result.answers.append(json.dumps({"id": row_id, **answer} if with_ids else answer, ensure_ascii=False))
        truncated = getattr(predictor, "last_truncated_rows", [])
        result.truncated, result.windowed = len(truncated), getattr(predictor, "last_windowed", 0)
        reason = (
            f"longer than the model's {predictor.max_length} tokens; answered from the first {predictor.max_length}"
        )
        odd += [{"line": rows.lines[i], "id": rows.ids[i], "reason": reason, "answered": True} for i in truncated]
    for row in sorted(odd, key=lambda row: row["line"]):
        if not with_ids:
            row.pop("id")
        result.odd_rows.append(json.dumps(row, ensure_ascii=False))
    return result
