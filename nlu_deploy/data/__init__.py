"""Reading data: tables (CSV, TSV, JSON, JSONL, Parquet), tagged sentences (CoNLL and word lists), the demo set."""
