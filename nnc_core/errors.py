"""Exceptions raised by the codec."""


class DecodeError(ValueError):
    """A bitstream is malformed, truncated or uses syntax this decoder does not support.

    The message says what is wrong and where (unit index and byte offset).
    """
