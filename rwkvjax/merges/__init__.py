"""Dynamic merges: the online tokenizer of frequent bigrams and the hypernetwork that embeds and scores them."""
