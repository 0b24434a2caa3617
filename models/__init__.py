"""Codec implementations; each sub-package registers itself with nmc.codec.registry."""
