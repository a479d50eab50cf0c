"""Generation: the cached decode step of decoder and seq2seq models, exported, verified and benchmarked
token by token (issue 11). ``spec`` is light (the manifest reads it); the rest imports TF lazily."""
