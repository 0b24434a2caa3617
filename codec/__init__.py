"""Media-agnostic core: container, entropy coding, the codec interface and registry, the shared
codec scaffolding (weights file, typed header fields, priors, plane coder, windows), media I/O."""
