"""Slot filling / NER: reading tagged data, the BIO policy, span scoring, sub-word alignment,
and the tagger through finetune, export, validate and predict on a tiny local BERT."""

import json
import shutil

import numpy as np
import pytest
from test_validate import perturb_classifier

from nlu_deploy import artifacts
from nlu_deploy.config import ValidateConfig
from nlu_deploy.data.tagged import load_tagged_sentences, normalise_bio, random_holdout, tag_list
from nlu_deploy.errors import DataError
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.metrics import entity_scores, entity_spans
from nlu_deploy.portable.tag_decoding import TagDecoder
from nlu_deploy.predict import load_predictor
from nlu_deploy.runtime.modeling import load_tokenizer
from nlu_deploy.runtime.word_tagger import (
    IGNORED,
    NO_SUBWORD,
    aligned_labels,
    cut_entities,
    encode_words,
    split_words,
    torch_tagger,
    trim_span,
)
from nlu_deploy.tasks import load_checkpoint

# --- reading tagged data -------------------------------------------------------------------


def test_jsonl_lists_csv_strings_and_conll_read_the_same_sentences(tmp_path):
    words = [["book", "a", "table", "for", "four"], ["play", "miles", "davis"]]
    tags = [["O", "O", "O", "O", "B-party_size"], ["O", "B-artist", "I-artist"]]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in zip(words, tags)))
    csv = tmp_path / "d.csv"
    csv.write_text("words,labels\n" + "".join(f"{' '.join(w)},{' '.join(t)}\n" for w, t in zip(words, tags)))
    conll = tmp_path / "d.conll"
    conll.write_text(
        "-DOCSTART- -X- O O\n\n"
        + "\n\n\n".join("\n".join(f"{word} NN I-NP {tag}" for word, tag in zip(w, t)) for w, t in zip(words, tags))
        + "\n"
    )
    for data in (
        load_tagged_sentences(jsonl),
        load_tagged_sentences(csv, "words", "labels"),
        load_tagged_sentences(conll),
    ):
        assert data.words == words and data.tags == tags


def test_bio_policy_rewrites_stray_inside_tags_and_counts_them():
    tags, repaired = normalise_bio(["I-city", "I-city", "O", "I-date", "B-time", "I-date", "I-date"], "x")
    assert tags == ["B-city", "I-city", "O", "B-date", "B-time", "B-date", "I-date"]
    assert repaired == 3
    # the rewrite never changes the entities conlleval reads
    original = ["I-city", "I-city", "O", "I-date", "B-time", "I-date", "I-date"]
    assert entity_spans(original) == entity_spans(tags)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("S-city", "tag 'S-city' is not BIO"),
        ("0", "the letter O, not zero"),
        ("B-", "tag 'B-' is not BIO"),
        ("city", "tag 'city' is not BIO"),
    ],
)
def test_tags_outside_bio_are_refused_with_the_word(bad, message):
    with pytest.raises(DataError, match=message) as error:
        normalise_bio(["O", bad], "d.jsonl example 7")
    assert "d.jsonl example 7, word 2" in str(error.value)


def test_malformed_tagged_files_get_one_clear_sentence(tmp_path):
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match="uneven.jsonl example 1: 2 words but 1 tags"):
        load_tagged_sentences(uneven)
    not_list = tmp_path / "not_list.jsonl"
    not_list.write_text('{"tokens": 3, "tags": ["O"]}\n')
    with pytest.raises(DataError, match="'tokens' must be a list of strings"):
        load_tagged_sentences(not_list)
    one_column = tmp_path / "one.conll"
    one_column.write_text("paris B-city\nlonely\n")
    with pytest.raises(DataError, match="one.conll line 2: expected a word and a tag"):
        load_tagged_sentences(one_column)
    no_entities = tmp_path / "none.jsonl"
    no_entities.write_text('{"tokens": ["hi"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match="has no entities"):
        tag_list(load_tagged_sentences(no_entities))
    wrong_suffix = tmp_path / "d.xlsx"
    wrong_suffix.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type \.xlsx for tagged data; use one of .*\.conll"):
        load_tagged_sentences(wrong_suffix)


def test_empty_sentences_are_skipped_and_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"tokens": [], "tags": []}\n{"tokens": ["in", "oslo"], "tags": ["O", "B-city"]}\n')
    data = load_tagged_sentences(path)
    assert data.words == [["in", "oslo"]] and data.empty_sentences == 1


def test_tag_list_has_both_prefixes_for_every_type_and_holdout_is_seeded(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"tokens": ["in", f"c{i}"], "tags": ["O", "B-city"]}) + "\n" for i in range(20)))
    data = load_tagged_sentences(path)
    assert tag_list(data) == ["O", "B-city", "I-city"]
    train, held = random_holdout(data, 0.1, seed=3)
    assert len(held) == 2 and len(train) == 18
    assert random_holdout(data, 0.1, seed=3)[1].words == held.words
    assert not {tuple(w) for w in held.words} & {tuple(w) for w in train.words}


# --- span scoring -------------------------------------------------------------------------


def test_entity_spans_follow_conlleval():
    assert entity_spans(["B-a", "I-a", "O", "B-b", "B-b", "I-b"]) == [("a", 0, 2), ("b", 3, 4), ("b", 4, 6)]
    assert entity_spans(["I-a", "I-b", "I-b", "O", "I-a"]) == [("a", 0, 1), ("b", 1, 3), ("a", 4, 5)]
    assert entity_spans(["B-a", "I-a"]) == [("a", 0, 2)]  # an entity at the very end
    assert entity_spans([]) == []


def test_entity_scores_count_exact_spans_only():
    gold = [["B-city", "I-city", "O", "B-date"], ["B-time", "O"]]
    predicted = [["B-city", "O", "O", "B-date"], ["B-time", "O"]]  # city boundary wrong
    scores = entity_scores(gold, predicted)
    # gold 3 entities, predicted 3, matched 2 (date, time); "B-city" alone is a different span
    assert scores["entity_precision"] == pytest.approx(2 / 3) and scores["entity_recall"] == pytest.approx(2 / 3)
    assert scores["entity_f1"] == pytest.approx(2 / 3) and scores["entities"] == 3
    assert scores["tag_accuracy"] == pytest.approx(5 / 6)
    assert scores["per_type"]["city"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["date"]["f1"] == 1.0
    wrong_type = entity_scores([["B-city"]], [["B-date"]])
    assert wrong_type["entity_f1"] == 0.0 and wrong_type["per_type"]["date"]["support"] == 0
    assert entity_scores([["O"]], [["O"]])["entity_f1"] == 0.0  # nothing to find: no credit


def _logits(probabilities):
    return np.log(np.array(probabilities, dtype=np.float64))


def test_decoding_returns_the_best_valid_bio_sequence_not_each_words_best_tag():
    decoder = TagDecoder(["O", "B-city", "I-city", "B-artist", "I-artist"])
    # Word by word the best tags are I-city B-city I-artist: both I- tags would be invalid here.
    logits = _logits([[0.30, 0.20, 0.40, 0.05, 0.05], [0.10, 0.50, 0.30, 0.05, 0.05], [0.10, 0.05, 0.05, 0.35, 0.45]])
    tags, scores = decoder.decode(logits)
    assert tags == ["O", "B-city", "B-artist"]
    assert scores == pytest.approx([0.30, 0.50, 0.35])  # each chosen tag's own probability
    # A valid word-by-word best sequence is left alone, and a long entity is kept whole.
    assert decoder.decode(_logits([[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1]]))[
        0
    ] == ["B-city", "I-city", "I-city"]
    # I-city after B-city beats B-city + O when the sequence as a whole is likelier.
    assert decoder.decode(_logits([[0.1, 0.8, 0.05, 0.025, 0.025], [0.45, 0.05, 0.4, 0.05, 0.05]]))[0] == [
        "B-city",
        "O",
    ]
    assert decoder.decode(_logits([[0.1, 0.8, 0.05, 0.025, 0.025], [0.35, 0.05, 0.4, 0.1, 0.1]]))[0] == [
        "B-city",
        "I-city",
    ]


def test_decoding_tags_words_without_logits_o_and_leaves_plain_tag_sets_to_the_argmax():
    decoder = TagDecoder(["O", "B-city", "I-city"])
    logits = _logits([[0.1, 0.8, 0.1], [np.nan] * 3, [0.05, 0.15, 0.8]])
    assert decoder.decode(logits)[0] == ["B-city", "O", "B-city"]  # I-city cannot follow O
    assert decoder.decode(np.zeros((0, 3)))[0] == []
    plain = TagDecoder(["O", "city", "artist"])  # no I- tags: nothing is forbidden
    rows = np.random.default_rng(0).normal(size=(12, 3))
    assert plain.decode(rows)[0] == [["O", "city", "artist"][i] for i in rows.argmax(-1)]


# --- sub-word alignment -------------------------------------------------------------------


def test_only_the_first_sub_word_of_each_word_is_labelled(tiny_encoder):
    tokenizer = load_tokenizer(str(tiny_encoder))
    words = ["the", "kitchenette", "tonight.", "(paris)"]  # 5, 2 and 3 sub-words
    encoded = encode_words(tokenizer, [words], max_length=32)
    first = encoded.first_subword[0]
    tokens = tokenizer.convert_ids_to_tokens(encoded.features[0]["input_ids"])
    assert tokens[first[1]] == "kitchen" and tokens[first[1] + 1].startswith("##")
    assert tokens[first[2]] == "tonight" and tokens[first[2] + 1] == "."
    assert first == sorted(first) and first[0] == 1  # after [CLS]
    labels = aligned_labels(first, [0, 1, 2, 3], len(tokens))
    assert [labels[p] for p in first] == [0, 1, 2, 3]
    assert sum(label != IGNORED for label in labels) == 4  # [CLS], [SEP], continuations ignored
    assert labels[0] == IGNORED and labels[-1] == IGNORED


def test_truncation_counts_the_gold_entities_it_cuts(tiny_encoder):
    tokenizer = load_tokenizer(str(tiny_encoder))
    words = ["wake", "me", "up", "at", "half", "past", "eight", "tomorrow"]
    tags = ["O", "O", "O", "O", "B-time", "I-time", "I-time", "B-date"]
    encoded = encode_words(tokenizer, [words, ["hi"]], max_length=7)  # [CLS] + 5 words + [SEP]
    first = encoded.first_subword[0]
    assert encoded.truncated == 1
    assert first[:5] == [1, 2, 3, 4, 5] and first[5:] == [NO_SUBWORD] * 3
    assert cut_entities(first, tags) == 2  # the time (partly cut) and the date
    assert cut_entities(encoded.first_subword[1], ["O"]) == 0


def test_words_without_sub_words_and_empty_sentences_are_tagged_o(tiny_tagger):
    model, tokenizer = load_checkpoint(tiny_tagger), load_tokenizer(str(tiny_tagger))
    tagger = torch_tagger(model, tokenizer, 32)
    logits = tagger.word_logits([["play", "\u200b", "jazz"], []])
    assert np.isnan(logits[0][1]).all() and not np.isnan(logits[0][[0, 2]]).any()
    assert logits[1].shape == (0, len(model.config.id2label))
    tags = tagger.tag([["play", "\u200b", "jazz"], []])
    assert tags[0][1] == "O" and tags[1] == []
    assert tagger.tag([[], []]) == [[], []] and tagger.predict_entities(["", "   "]) == [[], []]


# --- raw text to entities -----------------------------------------------------------------


def test_split_words_and_trimming_keep_offsets_into_the_original_text():
    text = "  Book\tParis,  at 8 p.m. (tonight)."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Book", "Paris,", "at", "8", "p.m.", "(tonight)."]
    assert all(text[start:end] == word for word, start, end in words)
    assert text[slice(*trim_span(text, words[1][1], words[1][2]))] == "Paris"
    assert text[slice(*trim_span(text, words[3][1], words[4][2]))] == "8 p.m."  # abbreviation kept
    assert text[slice(*trim_span(text, words[5][1], words[5][2]))] == "tonight"


def test_predict_returns_entities_with_correct_character_offsets(tiny_tagger_onnx):
    predictor, _ = load_predictor(tiny_tagger_onnx)
    texts = [
        "wake me up at 7 am tomorrow",
        "  Play   some jazz in the kitchen, please!",
        "send 50 dollars to mom",
        "",
        "what's my balance",
    ]
    results = predictor.predict(texts)
    assert len(results) == len(texts)
    for text, entities in zip(texts, results):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text and 0 < entity.score <= 1
    found = [{(e.type, e.text, e.start, e.end) for e in entities} for entities in results]
    assert found[0] == {("time", "7 am", 14, 18), ("date", "tomorrow", 19, 27)}
    assert found[1] == {("genre", "jazz", 14, 18), ("room", "kitchen", 26, 33)}
    assert found[2] == {("amount", "50 dollars", 5, 15), ("person", "mom", 19, 22)}
    assert found[3] == set() and found[4] == set()


# --- the stages ---------------------------------------------------------------------------


def test_tagger_checkpoint_records_entity_scores(tiny_tagger):
    metrics = json.loads((tiny_tagger / artifacts.METRICS).read_text())
    assert metrics["task"] == "token-classification" and metrics["primary_metric"] == "entity_f1"
    assert metrics["best"]["entity_f1"] >= 0.85  # 16 slot types; an untrained head scores ~0
    assert {"time", "date", "city", "amount"} <= set(metrics["best"]["per_type"])
    assert metrics["entities_cut_train"] == 0 and metrics["repaired_tags"] == 0
    assert json.loads((tiny_tagger / "config.json").read_text())["architectures"] == ["BertForTokenClassification"]
    split = [json.loads(line) for line in (tiny_tagger / artifacts.VALIDATION_SPLIT).read_text().splitlines()]
    assert len(split) == 50 and set(split[0]) == {"tokens", "tags"}


def test_every_onnx_variant_is_scored_on_entity_f1(tiny_tagger, tiny_tagger_onnx, tiny_tagged_dev):
    report = validate(ValidateConfig(model_dir=tiny_tagger, onnx_dir=tiny_tagger_onnx, data=tiny_tagged_dev))
    assert report.passed and report.examples == 150
    by_variant = {v.variant: v for v in report.variants}
    assert set(by_variant) == {"fp32", "optimized", "int8"}
    fp32 = by_variant["fp32"]
    assert fp32.max_abs_logit_diff["logits"] < 1e-4 and fp32.agreement["logits"] == 1.0
    assert fp32.scores["entity_f1"] == report.pytorch["entity_f1"] >= 0.85
    assert by_variant["int8"].agreement["logits"] > 0.95
    assert "| int8 | model_quantized.onnx |" in report.to_markdown() and "Per entity type" in report.to_markdown()
    assert report.to_json()["task"] == "token-classification"


def test_a_perturbed_tagger_fails_the_gate(tmp_path, tiny_tagger, tiny_tagger_onnx, tiny_tagged_dev):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_tagger_onnx, broken)
    perturb_classifier(broken / artifacts.ONNX_FP32)
    report = validate(ValidateConfig(model_dir=tiny_tagger, onnx_dir=broken, data=tiny_tagged_dev))
    assert [v.file for v in report.failures] == [artifacts.ONNX_FP32]
    assert report.failures[0].delta_points["entity_f1"] < -10 and report.failures[0].agreement["logits"] < 0.9


def test_validate_reads_conll_and_scores_unknown_tags_as_misses(tmp_path, tiny_tagger, tiny_tagger_onnx):
    conll = tmp_path / "dev.conll"
    conll.write_text("play O\njazz B-genre\n\nwake O\nme O\nat O\n7 B-time\nam I-time\n")
    report = validate(ValidateConfig(model_dir=tiny_tagger, onnx_dir=tiny_tagger_onnx, data=conll))
    assert report.examples == 2 and report.pytorch["entities"] == 2
    conll.write_text("play O\njazz B-genre\n\nfly O\nto O\nrome B-destination\n")
    report = validate(ValidateConfig(model_dir=tiny_tagger, onnx_dir=tiny_tagger_onnx, data=conll))
    assert report.unseen == {"tags": {"rows": 1, "labels": {"B-destination": 1}}}
    # the destination is a gold entity no model can find: recall is at most one half
    assert report.pytorch["entities"] == 2 and report.pytorch["entity_recall"] <= 0.5
    assert all(v.scores["entity_recall"] <= 0.5 for v in report.variants)


# --- the command line ---------------------------------------------------------------------


def test_run_token_classification_on_the_demo_slots_then_predict(tmp_path, tiny_encoder):
    from test_cli import invoke

    output = tmp_path / "slots"
    result = invoke(
        "run",
        "--task",
        "token-classification",
        "--model",
        tiny_encoder,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--lr",
        "5e-3",
        "--max-length",
        "32",
        "--batch-sizes",
        "1,4",
        "--seq-lens",
        "8",
        "--min-seconds",
        "0",
        "--recipe",
        "fixed",  # the tagger's chain is under test; the measured choice in test_cli.py
        "--output",
        output,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text())
    assert report["finetune"]["task"] == "token-classification"
    assert report["finetune"]["best"]["entity_f1"] >= 0.8 and report["validation"]["passed"]
    assert {f["variant"] for f in report["key_figures"]} == {"fp32", "optimized", "int8"}
    assert "entity F1 %" in (output / "report.md").read_text()

    result = invoke("predict", output / "onnx", "--json", "wake me up at 7 am tomorrow")
    assert result.exit_code == 0, result.output
    entities = json.loads(result.stdout)["entities"]
    assert {(e["type"], e["text"], e["start"], e["end"]) for e in entities} == {
        ("time", "7 am", 14, 18),
        ("date", "tomorrow", 19, 27),
    }


def test_training_comparison_scores_both_taggers_on_entity_f1(tmp_path, tiny_encoder, tiny_tagged_train):
    from nlu_deploy.config import FinetuneConfig
    from nlu_deploy.training.versus_trainer import compare_with_trainer

    config = FinetuneConfig(
        output=tmp_path / "unused",
        model=str(tiny_encoder),
        train=tiny_tagged_train,
        task="token-classification",
        epochs=6,
        batch_size=8,
        lr=5e-3,
        max_length=32,
    )
    comparison = compare_with_trainer(config)
    ours, trainer = comparison.runs
    assert comparison.metric == "entity F1" and "final validation entity F1 %" in comparison.to_markdown()
    # same recipe, same words, same alignment: both loops learn the demo slots alike
    assert ours.final_validation_score >= 0.85 and trainer.final_validation_score >= 0.85
    assert abs(ours.final_validation_score - trainer.final_validation_score) < 0.05


def test_tagger_mistakes_get_one_sentence(tmp_path, tiny_encoder, tiny_tagger, tiny_tagger_onnx):
    from test_cli import assert_clean_failure, invoke

    bad = tmp_path / "bad.conll"
    bad.write_text("play O\njazz S-genre\n")
    result = invoke(
        "finetune",
        "--task",
        "token-classification",
        "--model",
        tiny_encoder,
        "--train",
        bad,
        "--output",
        tmp_path / "out",
    )
    assert_clean_failure(result, 1, "bad.conll line 1, word 2: tag 'S-genre' is not BIO")
    assert not (tmp_path / "out").exists()
    csv = tmp_path / "plain.csv"
    csv.write_text("text,label\nhi,greet\n")
    result = invoke(
        "finetune",
        "--task",
        "token-classification",
        "--model",
        tiny_encoder,
        "--train",
        csv,
        "--output",
        tmp_path / "out",
    )
    assert_clean_failure(result, 1, "plain.csv has no column 'tokens' (columns: text, label)")


def test_quantize_auto_scores_a_tagger_on_entity_f1(tmp_path, tiny_tagger):
    from nlu_deploy.config import ExportConfig
    from nlu_deploy.export.onnx_export import export

    result = export(
        ExportConfig(
            model_dir=tiny_tagger, output=tmp_path / "auto", quantize="auto", per_channel=False, max_score_drop=1.0
        )
    )
    report = result.search
    assert report.metric == "entity F1" and report.kept is not None
    metrics = json.loads((tiny_tagger / artifacts.METRICS).read_text())
    assert report.pytorch_accuracy == pytest.approx(metrics["best"]["entity_f1"], abs=0.01)
    kept = next(c for c in report.candidates if c.kept)
    # the search's score of the kept file is what validate measures on the same split
    validation = validate(
        ValidateConfig(model_dir=tiny_tagger, onnx_dir=tmp_path / "auto", data=tiny_tagger / artifacts.VALIDATION_SPLIT)
    )
    int8 = next(v for v in validation.variants if v.variant == "int8")
    assert int8.scores["entity_f1"] == pytest.approx(kept.accuracy, abs=1e-9) and kept.delta_points >= -1.0
    assert "entity F1 %" in (tmp_path / "auto" / artifacts.QUANTIZATION_REPORT_MD).read_text()


def test_long_texts_are_tagged_whole_in_overlapping_windows(tiny_tagger_onnx):
    from test_cli import invoke

    long_text = "play some jazz in the kitchen " * 12  # 72 words, max length 32
    result = invoke("predict", tiny_tagger_onnx, "--json", long_text)
    assert result.exit_code == 0, result.output
    entities = json.loads(result.stdout)["entities"]
    assert all(long_text[e["start"] : e["end"]] == e["text"] for e in entities)
    # every repetition is read: 12 genres, and rooms up to the last words (a single 32-token
    # window would stop after about 5 repetitions)
    assert [(e["type"], e["text"]) for e in entities if e["type"] == "genre"] == [("genre", "jazz")] * 12
    assert sum(e["text"] == "kitchen" for e in entities) >= 10 and entities[-1]["end"] > 0.95 * len(long_text.strip())


def test_windows_cover_every_word_and_overlap():
    from nlu_deploy.runtime.word_tagger import word_windows

    counts = [1, 3, 1, 1, 2, 1, 1, 1, 4, 1, 1]
    windows = word_windows(counts, budget=6)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    assert all(sum(counts[a:b]) <= 6 for a, b in windows)
    assert all(b2 > b1 and a2 > a1 and a2 < b1 for (a1, b1), (a2, b2) in zip(windows, windows[1:]))  # overlap
    assert word_windows([9, 1], budget=4) == [(0, 1), (1, 2)]  # a word longer than the budget: alone
    assert word_windows([1, 1], budget=4) == [(0, 2)]


@pytest.mark.parametrize("mode, variant", [("static", "int8"), ("fp16", "fp16")])
def test_static_int8_and_fp16_taggers_keep_their_entities(tmp_path, tiny_tagger, tiny_tagged_dev, mode, variant):
    from nlu_deploy.config import ExportConfig
    from nlu_deploy.export.onnx_export import export

    # static calibrates on the training sample finetune recorded (sentences, not word lists)
    export(ExportConfig(model_dir=tiny_tagger, output=tmp_path / mode, quantize=mode))
    report = validate(ValidateConfig(model_dir=tiny_tagger, onnx_dir=tmp_path / mode, data=tiny_tagged_dev))
    scored = next(v for v in report.variants if v.variant == variant)
    assert report.passed and scored.agreement["logits"] > 0.95
