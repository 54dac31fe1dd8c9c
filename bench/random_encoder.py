"""Write a BERT-shaped encoder with random weights and the tokenizer of another model, for
training-speed runs: speed does not depend on what the weights are, so nothing large has to
travel to a machine that cannot download (bench/gpu_check.sh's training step).

    python bench/random_encoder.py --tokenizer .gpu/minilm --output /tmp/bert-base   # BertConfig(): BERT-base
    python bench/random_encoder.py --tokenizer DIR --output DIR --layers 2 --hidden 64 --heads 2 --intermediate 128
"""

import argparse

import torch
from transformers import AutoTokenizer, BertConfig, BertModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="Model directory whose tokenizer the encoder uses.")
    parser.add_argument("--output", required=True)
    defaults = BertConfig()  # BERT-base: 12 layers, 768 wide, 12 heads, 3072 intermediate
    parser.add_argument("--layers", type=int, default=defaults.num_hidden_layers)
    parser.add_argument("--hidden", type=int, default=defaults.hidden_size)
    parser.add_argument("--heads", type=int, default=defaults.num_attention_heads)
    parser.add_argument("--intermediate", type=int, default=defaults.intermediate_size)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
    )
    BertModel(config).save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"{args.output}: random BERT encoder, {args.layers} layers x {args.hidden}, vocab {len(tokenizer)}")


if __name__ == "__main__":
    main()
