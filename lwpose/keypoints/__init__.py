"""Keypoint sets: one JSON description per set (`sets/` holds the shipped ones), every table derived from it, and
unions of several sets. Plain Python and numpy: nothing here needs torch."""
from lwpose.keypoints.keypoint_set import (KeypointSet, KeypointSetError, find_shipped_set_for_names, load_keypoint_set,
                                           names_a_file, normalize_name, shipped_set_names)

__all__ = ["KeypointSet", "KeypointSetError", "find_shipped_set_for_names", "load_keypoint_set", "names_a_file",
           "normalize_name", "shipped_set_names"]
