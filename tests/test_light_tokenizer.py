"""The light tokenizer (tokenizers + tokenizer.json, no transformers) gives the ids, masks and
word alignment transformers' fast tokenizer gives, on the packaged MiniLM's vocabulary."""

from nlu_deploy.data.demo import generate_demo_examples
from nlu_deploy.portable.light_tokenizer import LightTokenizer
from nlu_deploy.runtime.modeling import load_tokenizer, resolve_model_source

TEXTS = [e["text"] for e in generate_demo_examples()[:300]] + [
    "",
    "  spaces   everywhere ",
    "Ünïcödé café – naïve “quotes”",
    "emoji 🎵 play",
    "UPPER lower MiXeD 12:30pm",
    "a very long request " * 30,
]


def test_same_ids_masks_and_words_as_transformers():
    directory = resolve_model_source(None)
    light, reference = LightTokenizer(directory), load_tokenizer(directory)
    assert light.pad_token_id == reference.pad_token_id
    assert light.num_special_tokens_to_add() == reference.num_special_tokens_to_add(pair=False)
    for truncation in ({}, {"truncation": True, "max_length": 16}):
        got, want = light(TEXTS, **truncation), reference(TEXTS, **truncation)
        for key in want.keys():
            assert got[key] == want[key], key
    sentences = [text.split() for text in TEXTS]
    for options in ({}, {"truncation": True, "max_length": 12}, {"add_special_tokens": False}):
        got = light(sentences, is_split_into_words=True, **options)
        want = reference(sentences, is_split_into_words=True, **options)
        assert got["input_ids"] == want["input_ids"]
        assert all(got.word_ids(i) == want.word_ids(i) for i in range(len(sentences)))
    assert light(["x " * 400], truncation=True, max_length=16)["input_ids"][0][-1] == reference.sep_token_id
