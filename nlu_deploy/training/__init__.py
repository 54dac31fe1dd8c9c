"""The training stage: the loop, its checkpoints and processes, weight averaging, the search, students, out-of-scope calibration, and the comparison with transformers.Trainer."""
