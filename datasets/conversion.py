"""Keypoints of one set expressed in another: by name (with aliases), plus the target set's `derived_keypoints`.

A target keypoint is either copied from one source keypoint or is the midpoint of two (lwop18's neck from COCO's
shoulders), or the source does not define it at all: *unlabelled*, which is not the same as *labelled but not
visible* (COCO v=0). Unlabelled keypoints get no loss (see datasets/targets.py); v=0 ones are trained as background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lwpose.keypoints import KeypointSet


@dataclass(frozen=True)
class KeypointConversion:
    """`first[j]`, `second[j]`: the source keypoints target keypoint j comes from (-1: none). first only: a copy;
    both: their midpoint, labelled only where both are, visible only where both are."""

    source: KeypointSet
    target: KeypointSet
    first: np.ndarray
    second: np.ndarray

    @classmethod
    def by_name(cls, source: KeypointSet, target: KeypointSet,
                explicit: Sequence[tuple[Sequence[str], str]] = ()) -> "KeypointConversion":
        """Match target keypoints to source keypoints by name or alias; a target keypoint the source lacks is taken
        from the target set's `derived_keypoints` when the source has all its parts. `explicit` entries
        ((source names...), target name) come first: one name copies, two names take the midpoint."""
        first = np.full(target.num_keypoints, -1, np.int64)
        second = np.full(target.num_keypoints, -1, np.int64)

        def find_in_source(name: str) -> int:
            index = source.find(name)
            if index is None:
                for alias in target.aliases.get(name, ()):
                    index = source.find(alias)
                    if index is not None:
                        break
            return -1 if index is None else index

        for parts, target_name in explicit:
            j = target.find(target_name)
            if j is None:
                raise ValueError(f"conversion {source.name} -> {target.name}: unknown target keypoint '{target_name}'")
            indices = [source.find(p) for p in parts]
            if len(indices) not in (1, 2) or any(i is None for i in indices):
                raise ValueError(f"conversion {source.name} -> {target.name}: source keypoints {list(parts)} for "
                                 f"'{target_name}' must be one or two names of set '{source.name}'")
            first[j] = indices[0]
            second[j] = indices[1] if len(indices) == 2 else -1
        for j, name in enumerate(target.keypoints):
            if first[j] >= 0:
                continue
            first[j] = find_in_source(name)
            if first[j] >= 0:
                continue
            parts = target.derived_keypoints.get(name, {}).get("midpoint_of")
            if parts:
                a, b = find_in_source(parts[0]), find_in_source(parts[1])
                if a >= 0 and b >= 0:
                    first[j], second[j] = a, b
        return cls(source, target, first, second)

    @property
    def labelled(self) -> np.ndarray:
        """(K_target,) bool: target keypoints this source labels at all."""
        return self.first >= 0

    @property
    def is_identity(self) -> bool:
        return (self.source.keypoints == self.target.keypoints
                and bool(np.all(self.first == np.arange(self.target.num_keypoints))) and bool(np.all(self.second < 0)))

    def convert(self, keypoints: np.ndarray) -> np.ndarray:
        """(..., K_source, 3) x, y, v -> (..., K_target, 3); unlabelled and not-labelled keypoints are (0, 0, 0)."""
        keypoints = np.asarray(keypoints, np.float64)
        out = np.zeros(keypoints.shape[:-2] + (self.target.num_keypoints, 3))
        copy = (self.first >= 0) & (self.second < 0)
        out[..., copy, :] = keypoints[..., self.first[copy], :]
        mid = np.flatnonzero(self.second >= 0)
        if len(mid):
            a = keypoints[..., self.first[mid], :]
            b = keypoints[..., self.second[mid], :]
            both = (a[..., 2] > 0) & (b[..., 2] > 0)
            out[..., mid, :2] = np.where(both[..., None], (a[..., :2] + b[..., :2]) / 2, 0)
            # Visible only if both parts are; occluded if either is.
            out[..., mid, 2] = np.where(both, np.minimum(a[..., 2], b[..., 2]), 0)
        return out

    def describe(self) -> str:
        parts = []
        for j, name in enumerate(self.target.keypoints):
            if self.first[j] < 0:
                parts.append(f"{name}: unlabelled")
            elif self.second[j] >= 0:
                parts.append(f"{name}: midpoint of {self.source.keypoints[self.first[j]]}, "
                             f"{self.source.keypoints[self.second[j]]}")
        return "; ".join(parts) if parts else "every keypoint by name"
