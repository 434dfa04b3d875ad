"""The one error type of `lmm.prepare`: a message that names what failed and the command or setting that fixes it."""

from __future__ import annotations


class PrepareError(RuntimeError):
    """Fetching, unpacking or verifying failed; the message is meant for the user as it stands."""
