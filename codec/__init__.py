"""Media-agnostic core: container, entropy coding, codec registry, media I/O."""
