"""Code that also runs beside Triton's Python models, where nlu_deploy is not installed: stdlib, numpy and tokenizers only (a test keeps it so)."""
