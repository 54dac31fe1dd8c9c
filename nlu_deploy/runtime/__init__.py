"""Running models: onnxruntime sessions, model and tokenizer loading, the word tagger, what the machine is."""
