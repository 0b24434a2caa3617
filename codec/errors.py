"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class NmcError(Exception):
    """Base class of every error caused by the user's input rather than a bug."""


class ContainerError(NmcError, ValueError):
    """The .nmc file is not valid: wrong magic or version, bad checksum, inconsistent sizes."""


class TruncatedError(ContainerError, EOFError):
    """The .nmc file ends before its structure says it should."""


class MediaError(NmcError, ValueError):
    """The input media cannot be read, or a codec cannot code it."""


class CodecNotFoundError(NmcError, LookupError):
    """No installed codec matches the name or the media kind."""


class WeightsMismatchError(NmcError):
    """The file was written with other weights than the installed model has."""
