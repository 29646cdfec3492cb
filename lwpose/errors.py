"""The one base of every error lwpose raises on purpose, so a caller can catch them all with one clause.

Each subclass also derives from the built-in exception it used to be (a bad keypoint set is still a ValueError, an
unreadable image still an OSError), so code that catches those keeps working. Messages name the file and the entry
at fault; an error that a setting can fix lists those settings by name (`settings`, e.g. ("batch_size",)), and the
command-line entry points turn them into their flags (`flag_hint`).
"""


class LwposeError(Exception):
    """Base of every lwpose exception. `settings`: the names of the options that change what went wrong."""

    def __init__(self, *args, settings: tuple[str, ...] = ()):
        super().__init__(*args)
        self.settings = tuple(settings)


class SettingError(LwposeError, ValueError):
    """Settings that cannot work together or with the data (a batch larger than the dataset, ...)."""


def flag_hint(error: BaseException) -> str:
    """' (see --batch-size)' for an error whose settings name the options that fix it; '' otherwise. Every entry
    point names a flag after the setting it sets (--batch-size sets batch_size)."""
    flags = ["--" + name.replace("_", "-") for name in getattr(error, "settings", ())]
    return f" (see {', '.join(flags)})" if flags else ""
