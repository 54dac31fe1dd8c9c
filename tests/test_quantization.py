"""Static int8, fp16 and the accuracy-budget search, on tiny models."""

import json

import numpy as np
import onnx
from onnx import numpy_helper

from nlu_deploy import artifacts
from nlu_deploy.config import ExportConfig
from nlu_deploy.export.onnx_export import export
from nlu_deploy.export.quantize import FP16_KEEP_FP32_OPS
from nlu_deploy.export.quantize_search import TIE_TOLERANCE, Candidate, pick_kept


def graph(path):
    return onnx.load(str(path)).graph


def activation_scales(path):
    g = graph(path)
    scales = {
        i.name: float(numpy_helper.to_array(i)) for i in g.initializer if i.name.endswith("_scale") and not i.dims
    }
    quantize_inputs = {n.input[1] for n in g.node if n.op_type == "QuantizeLinear"}
    return {name: value for name, value in scales.items() if name in quantize_inputs}


def test_static_quantization_calibrates_on_real_inputs(tmp_path, tiny_checkpoint):
    short_texts = tmp_path / "short.csv"
    short_texts.write_text("text\nplay jazz\nlights off\nwake me\ntimer now\n", encoding="utf-8")
    default = tmp_path / "default"
    export(ExportConfig(model_dir=tiny_checkpoint, output=default, quantize="static", calibration_samples=64))
    export(
        ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "short", quantize="static", calibration=short_texts)
    )
    quantized = default / artifacts.ONNX_QUANTIZED
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph(quantized).node}
    manifest = artifacts.read_manifest(default)
    assert manifest["quantization"]["mode"] == "static" and manifest["quantization"]["method"] == "minmax"
    assert manifest["quantization"]["calibration_batches"] >= 8  # 64 sampled training texts
    # the activation ranges come from the calibration data: other texts, other scales
    from_training, from_short = (
        activation_scales(quantized),
        activation_scales(tmp_path / "short" / artifacts.ONNX_QUANTIZED),
    )
    assert from_training and from_training.keys() == from_short.keys()
    assert sum(from_training[k] != from_short[k] for k in from_training) > len(from_training) // 2


def test_fp16_keeps_sensitive_ops_and_the_interface_in_fp32(tmp_path, tiny_checkpoint):
    export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "onnx", optimize="O2", quantize="fp16"))
    g = graph(tmp_path / "onnx" / artifacts.ONNX_FP16)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g.initializer)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in g.input)
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_initializers = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    produced_fp16 = {
        o for n in g.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16 for o in n.output
    }
    sensitive = [n for n in g.node if n.op_type in FP16_KEEP_FP32_OPS]
    assert {n.op_type for n in sensitive} >= {"LayerNormalization", "Softmax", "Erf"}
    for node in sensitive:
        assert not set(node.input) & (fp16_initializers | produced_fp16), node.name
    # the graph is valid and faithful: onnxruntime runs it, and the export check recorded the gap
    diff = artifacts.read_manifest(tmp_path / "onnx")["max_abs_logit_diff"]["fp16"]
    assert 0 < diff < 0.05


def test_auto_keeps_the_fastest_candidate_inside_the_budget_and_the_most_accurate_of_ties(tmp_path, tiny_checkpoint):
    export(
        ExportConfig(
            model_dir=tiny_checkpoint,
            output=tmp_path / "onnx",
            optimize="O2",
            quantize="auto",
            max_score_drop=1.0,
            calibration_samples=64,
        )
    )
    report = json.loads((tmp_path / "onnx" / artifacts.QUANTIZATION_REPORT_JSON).read_text())
    candidates = report["candidates"]
    assert {c["name"] for c in candidates} >= {
        "dynamic/plain",
        "dynamic/optimized",
        "static-minmax/plain",
        "dynamic/plain/all-matmuls",
    }
    kept = [c for c in candidates if c["kept"]]
    assert len(kept) == 1 and report["kept"] == kept[0]["name"]
    assert kept[0]["delta_points"] >= -1.0
    fitting = [c for c in candidates if c["fits"]]
    pool = [c for c in fitting if c["supported"]] or fitting  # shown within budget by its interval, first
    fastest = min(c["latency_b32_ms"] for c in pool)
    ties = [c for c in pool if c["latency_b32_ms"] <= fastest * (1 + TIE_TOLERANCE)]
    for c in fitting:
        low, high = c["delta_intervals"]["accuracy"]
        assert low <= c["delta_points"] + 1e-9 and c["delta_points"] <= high + 1e-9
    assert kept[0] in ties
    assert min(kept[0]["deltas"].values()) == max(min(c["deltas"].values()) for c in ties)
    for c in candidates:
        assert c["error"] or (c["size_mb"] > 0 and c["latency_b1_ms"] > 0 and c["accuracy"] is not None)
    assert (tmp_path / "onnx" / artifacts.ONNX_QUANTIZED).exists()
    assert "Kept: **" in (tmp_path / "onnx" / artifacts.QUANTIZATION_REPORT_MD).read_text()
    assert not list((tmp_path / "onnx").glob(".search*"))
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx")) == [
        "model.onnx",
        "model_optimized.onnx",
        "model_quantized.onnx",
    ]


def borderline_examples(model, tokenizer, count=200):
    """Word salads the PyTorch model is least sure about, labelled with its own answers: the
    held-out set on which quantization noise shows up as lost accuracy."""
    import random

    from nlu_deploy.data.tables import LabelledTexts
    from nlu_deploy.runtime.sessions import TorchTextClassifier

    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha())
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(3000)]
    logits = TorchTextClassifier(model, tokenizer, 32).logits(texts)
    top_two = np.sort(logits, axis=-1)[:, -2:]
    closest = np.argsort(top_two[:, 1] - top_two[:, 0])[:count]
    return LabelledTexts(
        [texts[i] for i in closest],
        [model.config.id2label[int(logits[i].argmax())] for i in closest],
        "borderline texts",
    )


def test_budget_search_repairs_a_candidate_by_keeping_sensitive_layers_in_fp32(tmp_path, tiny_checkpoint):
    from nlu_deploy.export.quantize_search import Candidate, Search
    from nlu_deploy.runtime.modeling import load_tokenizer
    from nlu_deploy.tasks import get_task, load_checkpoint

    model, tokenizer = load_checkpoint(tiny_checkpoint), load_tokenizer(str(tiny_checkpoint))
    export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "onnx"))
    plain = tmp_path / "onnx" / artifacts.ONNX_FP32
    search = Search(
        tmp_path / "work",
        get_task("text-classification"),
        model,
        tokenizer,
        borderline_examples(model, tokenizer),
        [],
        budget_points=1.0,
        preset="auto",
        calibration_method="minmax",
    )
    candidate = Candidate("dynamic/plain", "dynamic", "plain", False)
    target = tmp_path / "work" / "candidate.onnx"
    target.parent.mkdir()
    search.build(candidate, plain, target)
    search.measure(candidate, target)
    assert not candidate.fits, "plain int8 was expected to flip some borderline predictions"
    search.repair(candidate, plain, target, beat_latency=None)
    assert candidate.fits and candidate.delta_points >= -1.0 - 1e-9
    assert candidate.nodes_in_fp32 and "kept in fp32 by sensitivity" in candidate.note
    nodes = {n.name: n.op_type for n in graph(target).node}
    kept_matmuls = [name for name in candidate.nodes_in_fp32 if name in nodes and "MatMul" in name]
    assert kept_matmuls and all(nodes[name] == "MatMul" for name in kept_matmuls)  # not MatMulInteger
    assert {"MatMulInteger", "DynamicQuantizeMatMul"} & set(nodes.values())  # the rest is still int8


def test_speeds_within_timing_noise_are_ties_and_the_most_accurate_tie_is_kept():
    def candidate(name, latency, delta):
        return Candidate(
            name,
            "dynamic",
            "plain",
            False,
            latency_b32_ms=latency,
            delta_points=delta,
            deltas={"accuracy": delta},
            fits=True,
        )

    # the BANKING77 case: -0.30 points at 10.0 ms against -0.10 points 1% slower
    close = [candidate("a", 10.0, -0.30), candidate("b", 10.1, -0.10), candidate("c", 12.0, 0.0)]
    kept, ties = pick_kept(close)
    assert kept.name == "b" and {t.name for t in ties} == {"a", "b"}
    kept, ties = pick_kept([candidate("a", 10.0, -0.30), candidate("b", 11.0, -0.10)])  # 10% slower: no tie
    assert kept.name == "a" and len(ties) == 1
    kept, _ = pick_kept([candidate("a", 10.0, -0.10), candidate("b", 10.2, -0.10)])  # equally accurate: faster
    assert kept.name == "a"


def test_each_candidate_delta_carries_a_paired_bootstrap_interval_and_is_shown_within_budget_only_by_it(
    tmp_path, tiny_checkpoint
):
    from nlu_deploy.export.quantize_search import Candidate, Search
    from nlu_deploy.runtime.modeling import load_tokenizer
    from nlu_deploy.tasks import get_task, load_checkpoint

    model, tokenizer = load_checkpoint(tiny_checkpoint), load_tokenizer(str(tiny_checkpoint))
    export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "onnx"))
    search = Search(
        tmp_path / "work",
        get_task("text-classification"),
        model,
        tokenizer,
        borderline_examples(model, tokenizer),
        [],
        budget_points=1.0,
        preset="auto",
        calibration_method="minmax",
    )
    candidate = Candidate("dynamic/plain", "dynamic", "plain", False)
    target = tmp_path / "candidate.onnx"
    search.build(candidate, tmp_path / "onnx" / artifacts.ONNX_FP32, target)
    search.measure(candidate, target)
    low, high = candidate.delta_intervals["accuracy"]
    assert low < candidate.delta_points < 0 and low < high  # flips some of the 200 borderline texts
    # within budget on the point estimate, but not beyond doubt on 200 examples
    search.budget = -candidate.delta_points + 0.01
    search.measure(candidate, target)
    assert candidate.fits and not candidate.supported
    search.budget = -low + 0.01
    search.measure(candidate, target)
    assert candidate.fits and candidate.supported


def test_a_bootstrap_draw_regroups_each_sentences_word_rows():
    from nlu_deploy.data.tagged import TaggedSentences
    from nlu_deploy.tasks import get_task

    data = TaggedSentences([["a", "b"], ["c", "d", "e"], ["f"]], [["O", "O"], ["O", "O", "O"], ["O"]], "t")
    rows = np.arange(6, dtype=np.float32)[:, None]
    chosen, outputs = get_task("token-classification").resampled(data, {"logits": rows}, np.array([2, 0, 2]))
    assert chosen.words == [["f"], ["a", "b"], ["f"]]
    assert outputs["logits"][:, 0].tolist() == [5, 0, 1, 5]
    joint_rows = {"intent_logits": np.arange(3)[:, None], "slot_logits": rows}
    data = TaggedSentences(data.words, data.tags, "t", intents=["x", "y", "z"])
    chosen, outputs = get_task("joint").resampled(data, joint_rows, np.array([1]))
    assert chosen.intents == ["y"] and outputs["intent_logits"].tolist() == [[1]]
    assert outputs["slot_logits"][:, 0].tolist() == [2, 3, 4]
