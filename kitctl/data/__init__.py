"""kitctl data: datasets -> llm.c token shards (see docs/data.md).

Modules: ``sources`` (recipes/local files -> document batches), ``tokenize`` (parallel pipeline),
``shards`` (llm.c .bin format), ``manifest`` (manifest.json, read by the train planner), ``hellaswag``
(eval file), ``tokenizer`` (offline tiktoken + gpt2_tokenizer.bin), ``plan`` (options -> plan -> run).
"""
