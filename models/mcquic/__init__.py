"""McQuic-style image codec network (multi-codebook VQ, variable rate) and its training script."""
