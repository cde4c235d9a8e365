"""The data layer: tokenizer, corpus, packed shards, task prompts, preference pairs, the knowledge base, retrieval."""
