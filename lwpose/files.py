"""Reading the JSON files lwpose's tools take (labels, translators, detections): one place that turns a missing or
malformed file into the caller's own error, naming the file and what it was meant to be."""
from __future__ import annotations

import json


def read_json(path: str, what: str, error: type[Exception]):
    """The parsed content of `path`; `error` ("{what} {path} does not exist" / "... is not JSON: ...") otherwise."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not JSON: {e}") from None
