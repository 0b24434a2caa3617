"""VQGAN extreme-rate image network (f16 tokens, k-means codebook ladder) and its training scripts."""
