"""HiFi-Codec: speech codec with group-residual VQ (network, training script, weights)."""
