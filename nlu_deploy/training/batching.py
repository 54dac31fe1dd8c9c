"""Batches whose shapes a compiled model can reuse.

`torch.compile(dynamic=True)` treats batch size and padded length as symbols, with two
exceptions that would compile a new graph in the middle of training:
- a dimension of size 1 is specialized (PyTorch guards sizes 0 and 1 apart), so a last batch
  holding a single example compiles a graph of its own at the end of every epoch's first pass;
- "duck sizing" ties dimensions that happened to be equal when first compiled (batch 16 and
  padded length 16), so the first batch with a different length compiles again.
`BatchesWithoutSingletons` folds a lone last example into the batch before it, and
`compile_without_duck_sizing` turns the second off while training runs.
"""

from __future__ import annotations

from contextlib import contextmanager


class BatchesWithoutSingletons:
    """Lists of `batch_size` indices drawn from `sampler`; a last batch of one joins the
    batch before it (one batch of batch_size + 1). A sampler of one index still gives one batch.
    Any sampler works (random, distributed, sequential): order and epoch shuffles are its own."""

    def __init__(self, sampler, batch_size: int):
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self):
        held, batch = None, []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                if held:
                    yield held
                held, batch = batch, []
        if held and len(batch) == 1:
            held, batch = held + batch, []
        if held:
            yield held
        if batch:
            yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (rest > 1 or (rest == 1 and full == 0))


@contextmanager
def compile_without_duck_sizing():
    """Within this block torch.compile gives every dynamic dimension its own symbol."""
    import torch.fx.experimental._config as symbolic_shapes_config

    with symbolic_shapes_config.patch(use_duck_shape=False):
        yield
