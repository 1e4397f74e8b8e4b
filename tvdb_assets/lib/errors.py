"""The project's exceptions: each says what went wrong in words a user can act on."""


class TvdbError(Exception):
    """Base class of every error raised on purpose by tvdb-assets."""


class DocumentError(TvdbError):
    """One document cannot be ingested; the message names the file and the reason.

    It never stops other documents: the pipeline records it in `ingest_errors` and moves on.
    """

    def __init__(self, path: str, reason: str, stage: str = "parse") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.stage = stage
