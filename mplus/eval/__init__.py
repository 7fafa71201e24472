"""``python -m mplus.eval``: general benchmarks, MT-Bench-style conversation, toxicity and
harmlessness, run side by side on Hugging Face models (mplus exports or hub ids).

Light on purpose: heavy libraries (torch, transformers, lm-eval) load in the suite modules.
"""
