"""Scoring and timing: parity against PyTorch (validate), latency and throughput (benchmark), plots."""
