"""The trained model out of llm.c: checkpoint reading (numpy), HF export, sampling, lm-eval, the val-loss check.

Layer: beside observe and cluster; it may import core, host, data and train, and nothing below imports it.
"""
