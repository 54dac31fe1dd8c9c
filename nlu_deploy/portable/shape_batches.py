"""Running the requests a Triton dynamic batcher hands over as few model calls as possible:
requests whose tensors have one shape (the tokenizer pads to length buckets) are concatenated
into one batch, run once, and split back per request. Copied beside the Python-backend model
runners (onnxruntime's and OpenVINO's); stdlib and numpy only."""

import numpy as np


def run_by_shape(feeds, input_names, run):
    """feeds: one {input name: array} per request; run: a batch feed -> {output name: array}.
    Returns one {output name: rows} per request, in the requests' order."""
    by_shape = {}
    for position, feed in enumerate(feeds):
        by_shape.setdefault(feed[input_names[0]].shape[1:], []).append(position)
    results = [None] * len(feeds)
    for positions in by_shape.values():
        batch = {name: np.concatenate([feeds[p][name] for p in positions]) for name in input_names}
        outputs = run(batch)
        start = 0
        for position in positions:
            rows = len(feeds[position][input_names[0]])
            results[position] = {
                name: np.ascontiguousarray(value[start : start + rows]) for name, value in outputs.items()
            }
            start += rows
    return results


def respond_by_shape(pb_utils, requests, input_names, output_names, run):
    """A Python-backend model's execute(): one response per request, the requests run by shape.
    pb_utils is Triton's triton_python_backend_utils, passed in (it exists only inside Triton)."""
    feeds = [
        {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in input_names}
        for request in requests
    ]
    return [
        pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, result[name]) for name in output_names])
        for result in run_by_shape(feeds, input_names, run)
    ]
