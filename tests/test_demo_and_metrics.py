from collections import Counter

import numpy as np
import pytest

from nlu_deploy.data.demo import generate_demo_examples
from nlu_deploy.metrics import accuracy, macro_f1


def test_demo_data_is_deterministic_varied_and_tagged():
    examples = generate_demo_examples()
    assert examples == generate_demo_examples()
    counts = Counter(e["label"] for e in examples)
    assert len(counts) >= 8 and len(examples) >= 2000
    assert len({e["text"] for e in examples}) == len(examples)
    for example in examples:
        assert example["text"] == " ".join(example["tokens"])
        assert len(example["tokens"]) == len(example["tags"])
        for previous, tag in zip(["O"] + example["tags"], example["tags"]):
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], example
    # varied phrasing: many distinct opening words per intent
    for intent in counts:
        openings = {e["tokens"][0].lower() for e in examples if e["label"] == intent}
        assert len(openings) >= 5, intent


def test_macro_f1_matches_a_hand_computed_value():
    gold = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp2 fp0 fn1 -> 0.8; class 1: tp1 fp1 fn1 -> 0.5; class 2: tp1 fp1 fn0 -> 2/3
    assert macro_f1(gold, predicted) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert accuracy(gold, predicted) == 4 / 6
    assert macro_f1(gold, gold) == 1.0
