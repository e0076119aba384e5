"""llmc-kit: from a bare GPU box to a running llm.c GPT-2 reproduction.

Data flows one way: config (kit.yaml) -> plan (pure, testable without Docker or GPUs) -> runtime.
"""
__version__ = "0.1.0"
