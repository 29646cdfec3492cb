"""The one base of every error lwpose raises on purpose, so a caller can catch them all with one clause.

Each subclass also derives from the built-in exception it used to be (a bad keypoint set is still a ValueError, an
unreadable image still an OSError), so code that catches those keeps working. Messages name the file and the entry
at fault; the command-line entry points add which flag to change.
"""


class LwposeError(Exception):
    """Base of every lwpose exception."""
