"""Keypoint sets: one JSON description per set, every table derived from it.

A keypoint set file holds what only a person can decide (names in heatmap channel order, the limbs the network
predicts PAFs for, where grouping starts, which limbs may only fill in a keypoint, OKS sigmas). Everything the
code needs beyond that (channel counts, PAF channel pairs, the flip permutation, the order people are assembled
in) is a property computed here, so no other file spells out a table or a keypoint count.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np

from lwpose.errors import LwposeError

SHIPPED_SETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sets")

# Name pieces that mark a keypoint as one side of a mirror pair, tried in this order.
_SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"))
_SIDE_SUFFIXES = (("_left", "_right"), ("_l", "_r"))


class KeypointSetError(LwposeError, ValueError):
    """A keypoint set description that cannot be used; the message names the file and the entry."""


def normalize_name(name: str) -> str:
    """Compare keypoint names the way annotation files spell them ('Right Shoulder' == 'right_shoulder')."""
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def shipped_set_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SHIPPED_SETS_DIR) if f.endswith(".json"))


def _mirror_name(name: str) -> str | None:
    lowered = name.lower()
    for left, right in _SIDE_PREFIXES:
        if lowered.startswith(left):
            return _match_case(name[: len(left)], right) + name[len(left):]
        if lowered.startswith(right):
            return _match_case(name[: len(right)], left) + name[len(right):]
    for left, right in _SIDE_SUFFIXES:
        if lowered.endswith(left):
            return name[: -len(left)] + _match_case(name[-len(left):], right)
        if lowered.endswith(right):
            return name[: -len(right)] + _match_case(name[-len(right):], left)
    return None


def _match_case(original: str, replacement: str) -> str:
    return replacement.upper() if original.isupper() else replacement


def _side_of(name: str) -> str:
    lowered = name.lower()
    for left, right in _SIDE_PREFIXES:
        if lowered.startswith(left):
            return "left"
        if lowered.startswith(right):
            return "right"
    for left, right in _SIDE_SUFFIXES:
        if lowered.endswith(left):
            return "left"
        if lowered.endswith(right):
            return "right"
    return "center"


@dataclass(frozen=True)
class KeypointSet:
    """A keypoint set as written in its JSON file, with every derived table as a property."""

    name: str
    keypoints: tuple[str, ...]
    limbs: tuple[tuple[str, str], ...]  # grouping order
    root: tuple[str, ...]
    sigmas: tuple[float, ...]
    fill_in_limbs: tuple[tuple[str, str], ...] = ()
    paf_order: tuple[tuple[str, str], ...] | None = None
    flip_pairs_override: tuple[tuple[str, str], ...] | None = None
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    derived_keypoints: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    head_size_keypoints: tuple[str, ...] | None = None
    description: str = ""
    source: str = "<memory>"
    # A multi-class set (lwpose/keypoints/classes.py): each class as a set of its own, and the description it came
    # from; empty for a single-class set.
    class_sets: tuple["KeypointSet", ...] = ()
    class_data: Mapping = field(default_factory=dict)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<memory>") -> "KeypointSet":
        def fail(message: str) -> KeypointSetError:
            return KeypointSetError(f"keypoint set {source}: {message}")

        if not isinstance(data, Mapping):
            raise fail(f"expected a JSON object, got {type(data).__name__}")
        if "classes" in data:
            from lwpose.keypoints.classes import multi_class_set

            return multi_class_set(cls, data, source)
        for key in ("keypoints", "limbs", "root", "sigmas"):
            if key not in data:
                raise fail(f"missing required entry '{key}'")

        def pair_list(key: str) -> tuple[tuple[str, str], ...]:
            value = data.get(key) or []
            pairs = []
            for i, pair in enumerate(value):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                        and all(isinstance(n, str) for n in pair)):
                    raise fail(f"{key}[{i}] = {pair!r}: expected a pair of keypoint names")
                pairs.append((pair[0], pair[1]))
            return tuple(pairs)

        names = data["keypoints"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise fail("'keypoints' must be a non-empty list of names")
        root = data["root"]
        if isinstance(root, str):
            root = [root]
        sigmas = data["sigmas"]
        if not isinstance(sigmas, list) or not all(isinstance(s, (int, float)) for s in sigmas):
            raise fail("'sigmas' must be a list of numbers, one per keypoint")
        aliases = {k: tuple(v) for k, v in (data.get("aliases") or {}).items()}
        derived = {k: {kind: tuple(v) for kind, v in rule.items()}
                   for k, rule in (data.get("derived_keypoints") or {}).items()}
        head = data.get("head_size_keypoints")
        keypoint_set = cls(
            name=str(data.get("name") or os.path.splitext(os.path.basename(source))[0]),
            keypoints=tuple(names),
            limbs=pair_list("limbs"),
            root=tuple(root),
            sigmas=tuple(float(s) for s in sigmas),
            fill_in_limbs=pair_list("fill_in_limbs"),
            paf_order=pair_list("paf_order") if data.get("paf_order") else None,
            flip_pairs_override=pair_list("flip_pairs") if data.get("flip_pairs") is not None else None,
            aliases=aliases,
            derived_keypoints=derived,
            head_size_keypoints=tuple(head) if head else None,
            description=str(data.get("description", "")),
            source=source,
        )
        keypoint_set.validate()
        return keypoint_set

    def to_dict(self) -> dict:
        """The JSON form (what a checkpoint stores), loadable again with `from_dict`."""
        if self.class_sets:
            return {"name": self.name, "description": self.description, **self.class_data}
        data = {
            "name": self.name,
            "description": self.description,
            "keypoints": list(self.keypoints),
            "root": list(self.root),
            "limbs": [list(p) for p in self.limbs],
            "fill_in_limbs": [list(p) for p in self.fill_in_limbs],
            "sigmas": list(self.sigmas),
        }
        if self.paf_order is not None:
            data["paf_order"] = [list(p) for p in self.paf_order]
        if self.flip_pairs_override is not None:
            data["flip_pairs"] = [list(p) for p in self.flip_pairs_override]
        if self.aliases:
            data["aliases"] = {k: list(v) for k, v in self.aliases.items()}
        if self.derived_keypoints:
            data["derived_keypoints"] = {k: {kind: list(v) for kind, v in rule.items()}
                                         for k, rule in self.derived_keypoints.items()}
        if self.head_size_keypoints:
            data["head_size_keypoints"] = list(self.head_size_keypoints)
        return data

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    # --------------------------------------------------------------- validation
    def _fail(self, message: str) -> KeypointSetError:
        return KeypointSetError(f"keypoint set {self.source}: {message}")

    def validate(self) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(self.keypoints):
            if name in seen:
                raise self._fail(f"keypoints[{i}] = '{name}' duplicates keypoints[{seen[name]}]")
            seen[name] = i
        if len(self.sigmas) != len(self.keypoints):
            raise self._fail(f"'sigmas' has {len(self.sigmas)} values for {len(self.keypoints)} keypoints")
        if any(not (s > 0) for s in self.sigmas):
            raise self._fail("every sigma must be positive")
        if not self.limbs:
            raise self._fail("'limbs' is empty: grouping needs at least one limb")

        def check_pair(key: str, i: int, pair: tuple[str, str]) -> None:
            for n in pair:
                if n not in seen:
                    raise self._fail(f"{key}[{i}] = {list(pair)}: unknown keypoint '{n}'")
            if pair[0] == pair[1]:
                raise self._fail(f"{key}[{i}] = {list(pair)}: a limb joins two different keypoints")

        limb_keys: dict[frozenset, int] = {}
        for i, pair in enumerate(self.limbs):
            check_pair("limbs", i, pair)
            key = frozenset(pair)
            if key in limb_keys:
                raise self._fail(f"limbs[{i}] = {list(pair)} duplicates limbs[{limb_keys[key]}]")
            limb_keys[key] = i
        for i, pair in enumerate(self.fill_in_limbs):
            check_pair("fill_in_limbs", i, pair)
            if frozenset(pair) not in limb_keys:
                raise self._fail(f"fill_in_limbs[{i}] = {list(pair)} is not one of the limbs")
        if self.paf_order is not None:
            if len(self.paf_order) != len(self.limbs):
                raise self._fail(f"'paf_order' lists {len(self.paf_order)} limbs, 'limbs' has {len(self.limbs)}")
            orders: set[tuple[str, str]] = set()
            for i, pair in enumerate(self.paf_order):
                check_pair("paf_order", i, pair)
                if pair not in set(self.limbs):
                    raise self._fail(f"paf_order[{i}] = {list(pair)} is not one of the limbs "
                                     "(with the same direction)")
                if pair in orders:
                    raise self._fail(f"paf_order[{i}] = {list(pair)} is listed twice")
                orders.add(pair)
        if not self.root:
            raise self._fail("'root' is empty: grouping needs a keypoint to start from")
        for i, name in enumerate(self.root):
            if name not in seen:
                raise self._fail(f"root[{i}] = '{name}': unknown keypoint")
        unreachable = [self.keypoints[i] for i in np.flatnonzero(~self._reachable_from_root())]
        if unreachable:
            raise self._fail(f"keypoint '{unreachable[0]}' cannot be reached from the root {list(self.root)} "
                             "through limbs that are not fill-in limbs"
                             + (f" (nor can {unreachable[1:]})" if len(unreachable) > 1 else ""))
        for name, alias_list in self.aliases.items():
            if name not in seen:
                raise self._fail(f"aliases: unknown keypoint '{name}'")
        for name, rule in self.derived_keypoints.items():
            if name not in seen:
                raise self._fail(f"derived_keypoints: unknown keypoint '{name}'")
            for kind, parts in rule.items():
                if kind != "midpoint_of":
                    raise self._fail(f"derived_keypoints['{name}']: unknown rule '{kind}' (known: midpoint_of)")
                if len(parts) != 2:
                    raise self._fail(f"derived_keypoints['{name}']['midpoint_of'] needs two names")
        if self.head_size_keypoints is not None:
            if len(self.head_size_keypoints) != 2 or any(n not in seen for n in self.head_size_keypoints):
                raise self._fail("'head_size_keypoints' must name two keypoints of the set")
        if self.flip_pairs_override is not None:
            used: dict[str, int] = {}
            for i, pair in enumerate(self.flip_pairs_override):
                for n in pair:
                    if n not in seen:
                        raise self._fail(f"flip_pairs[{i}] = {list(pair)}: unknown keypoint '{n}'")
                    if n in used:
                        raise self._fail(f"flip_pairs[{i}] = {list(pair)}: '{n}' is already paired "
                                         f"in flip_pairs[{used[n]}]")
                    used[n] = i

    def _reachable_from_root(self) -> np.ndarray:
        fill_in = {frozenset(p) for p in self.fill_in_limbs}
        neighbours: dict[str, list[str]] = {n: [] for n in self.keypoints}
        for a, b in self.limbs:
            if frozenset((a, b)) in fill_in:
                continue
            neighbours[a].append(b)
            neighbours[b].append(a)
        reached = set(self.root)
        frontier = list(self.root)
        while frontier:
            for nxt in neighbours[frontier.pop()]:
                if nxt not in reached:
                    reached.add(nxt)
                    frontier.append(nxt)
        return np.array([n in reached for n in self.keypoints])

    # ------------------------------------------------------------ derived tables
    @cached_property
    def classes(self) -> tuple:
        """The kinds of subject (KeypointClass): each with its own set, channels and limbs; a single-class set is
        one class of itself."""
        from lwpose.keypoints.classes import build_classes, single_class

        return build_classes(self) if self.class_sets else (single_class(self),)

    @property
    def num_classes(self) -> int:
        return max(1, len(self.class_sets))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def num_heatmaps(self) -> int:
        """Keypoint channels plus one background channel (the last)."""
        return len(self.keypoints) + 1

    @property
    def background_channel(self) -> int:
        return len(self.keypoints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @property
    def num_pafs(self) -> int:
        return 2 * len(self.limbs)

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.keypoints)}

    @cached_property
    def limb_keypoints(self) -> np.ndarray:
        """(L, 2) int32 keypoint ids of each limb, in grouping order; the PAF points from column 0 to 1."""
        return np.array([[self.index[a], self.index[b]] for a, b in self.limbs], dtype=np.int32)

    @cached_property
    def limb_paf_channels(self) -> np.ndarray:
        """(L, 2) int32: the PAF channels (x, y) of each limb in grouping order."""
        order = self.paf_order if self.paf_order is not None else self.limbs
        position = {pair: i for i, pair in enumerate(order)}
        return np.array([[2 * position[p], 2 * position[p] + 1] for p in self.limbs], dtype=np.int32)

    @cached_property
    def fill_in_mask(self) -> np.ndarray:
        """(L,) bool: limbs that may only add a missing keypoint to an existing person."""
        fill = {frozenset(p) for p in self.fill_in_limbs}
        return np.array([frozenset(p) in fill for p in self.limbs], dtype=bool)

    @cached_property
    def assembly_order(self) -> np.ndarray:
        """Limb ids in the order people are assembled: a limb is taken once one of its ends can be reached from
        the root through limbs already taken (keeping the file's order among those), fill-in limbs last."""
        reached = set(self.root)
        remaining = [i for i in range(self.num_limbs) if not self.fill_in_mask[i]]
        order: list[int] = []
        while remaining:
            progressed = False
            for i in list(remaining):
                a, b = self.limbs[i]
                if a in reached or b in reached:
                    order.append(i)
                    remaining.remove(i)
                    reached.update((a, b))
                    progressed = True
            if not progressed:  # validate() guarantees reachability, so this cannot loop
                raise self._fail("limbs do not connect to the root")
        order.extend(i for i in range(self.num_limbs) if self.fill_in_mask[i])
        return np.array(order, dtype=np.int32)

    @cached_property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """Index pairs (left, right) swapped by a horizontal flip."""
        if self.flip_pairs_override is not None:
            return tuple((self.index[a], self.index[b]) for a, b in self.flip_pairs_override)
        pairs = []
        for i, name in enumerate(self.keypoints):
            mirror = _mirror_name(name)
            if mirror is not None and mirror in self.index and i < self.index[mirror]:
                pairs.append((i, self.index[mirror]))
        return tuple(pairs)

    @cached_property
    def flip_permutation(self) -> np.ndarray:
        """(K,) int: after a horizontal flip, keypoint i of the flipped image is keypoint perm[i] of the original."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @cached_property
    def sides(self) -> tuple[str, ...]:
        """'left', 'right' or 'center' per keypoint (for drawing and checks)."""
        paired = {}
        for a, b in self.flip_pairs:
            paired[a] = _side_of(self.keypoints[a])
            paired[b] = _side_of(self.keypoints[b])
            if paired[a] == paired[b]:  # explicit pairs without side words: first is left
                paired[a], paired[b] = "left", "right"
        return tuple(paired.get(i, "center") for i in range(self.num_keypoints))

    @cached_property
    def mirror_limbs(self) -> np.ndarray:
        """(L, 2) int: for each limb, the limb a horizontal flip turns it into and +1, or -1 where that limb runs the
        other way; (-1, 0) for a limb with no mirror in the set (e.g. `nose`-`left_wrist` without
        `nose`-`right_wrist`)."""
        perm = self.flip_permutation
        by_pair = {(int(a), int(b)): i for i, (a, b) in enumerate(self.limb_keypoints)}
        mirrors = np.zeros((self.num_limbs, 2), dtype=np.int64)
        for i, (a, b) in enumerate(self.limb_keypoints):
            mirrored = (int(perm[a]), int(perm[b]))
            if mirrored in by_pair:
                mirrors[i] = by_pair[mirrored], 1
            elif mirrored[::-1] in by_pair:
                mirrors[i] = by_pair[mirrored[::-1]], -1
            else:
                mirrors[i] = -1, 0
        return mirrors

    @property
    def unmirrored_limbs(self) -> tuple[int, ...]:
        """Limbs whose mirror image is no limb of the set: a flipped image has no PAF channel for them."""
        return tuple(int(i) for i in np.flatnonzero(self.mirror_limbs[:, 0] < 0))

    def _limb_names(self, limbs) -> str:
        return ", ".join(f"{self.limbs[i][0]}-{self.limbs[i][1]}" for i in limbs)

    @cached_property
    def paf_flip_partial(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source channel, sign, flippable) per PAF channel: like `paf_flip_channels`, for any set; the channels of
        an unmirrored limb are not flippable (their source is themselves, their sign 0)."""
        channels = np.arange(self.num_pafs, dtype=np.int64)
        signs = np.zeros(self.num_pafs, dtype=np.float32)
        flippable = np.zeros(self.num_pafs, dtype=bool)
        for i, (source_limb, direction) in enumerate(self.mirror_limbs):
            if source_limb < 0:
                continue
            x_channel, y_channel = self.limb_paf_channels[i]
            src_x, src_y = self.limb_paf_channels[source_limb]
            channels[x_channel], channels[y_channel] = src_x, src_y
            # A mirrored image negates x; a limb stored in the other direction negates both.
            signs[x_channel], signs[y_channel] = -direction, direction
            flippable[[x_channel, y_channel]] = True
        return channels, signs, flippable

    @property
    def can_flip(self) -> bool:
        return not self.unmirrored_limbs

    @property
    def paf_flip_channels(self) -> tuple[np.ndarray, np.ndarray]:
        """(source channel, sign) per PAF channel: the PAFs of a flipped image, re-flipped spatially, become
        `pafs[source] * sign` in this set's layout."""
        if not self.can_flip:
            raise KeypointSetError(f"keypoint set {self.source}: limbs {self._limb_names(self.unmirrored_limbs)} "
                                   "have no mirror limb; flipping every PAF needs a left/right symmetric skeleton")
        channels, signs, _ = self.paf_flip_partial
        return channels, signs

    def describe_flip_pairs(self) -> str:
        """The flip pairs by name, for start-up summaries: 'left_eye<->right_eye, ...'."""
        pairs = ", ".join(f"{self.keypoints[a]}<->{self.keypoints[b]}" for a, b in self.flip_pairs)
        text = pairs or "none (no keypoint is named as one side of a pair)"
        if self.unmirrored_limbs:
            text += f"; limbs without a mirror: {self._limb_names(self.unmirrored_limbs)}"
        return text

    @cached_property
    def heatmap_flip_channels(self) -> np.ndarray:
        """Heatmap channel permutation for a flip (keypoints swapped left/right, background stays)."""
        return np.concatenate([self.flip_permutation, [self.background_channel]])

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    # ---------------------------------------------------------------- matching
    @cached_property
    def _lookup(self) -> dict[str, int]:
        table = {normalize_name(n): i for i, n in enumerate(self.keypoints)}
        for name, alias_list in self.aliases.items():
            for alias in alias_list:
                table.setdefault(normalize_name(alias), self.index[name])
        return table

    def find(self, name: str) -> int | None:
        """Index of a keypoint by its name or one of its aliases, spelled as annotation files spell them."""
        return self._lookup.get(normalize_name(name))

    def matches_names(self, names: Sequence[str]) -> bool:
        """Whether a file's list of keypoint names (e.g. a COCO category's) describes this set, in order."""
        return len(names) == self.num_keypoints and all(self.find(n) == i for i, n in enumerate(names))

    def indices_in(self, other: "KeypointSet") -> np.ndarray:
        """(len(other),) int: for each keypoint of `other`, its index in this set, -1 where absent. Names match
        first; a keypoint of `other` left over then takes one of this set's keypoints still free through an alias
        of either set (a set saying `"head": ["nose"]` scores a model's nose as its head, and the other way)."""
        mapping = np.array([self.index.get(n, -1) for n in other.keypoints], dtype=np.int64)
        used = set(mapping[mapping >= 0].tolist())
        for j, name in enumerate(other.keypoints):
            if mapping[j] >= 0:
                continue
            for candidate in (name, *other.aliases.get(name, ())):
                found = self.find(candidate)
                if found is not None and found not in used:
                    mapping[j] = found
                    used.add(found)
                    break
        return mapping

    def __repr__(self) -> str:
        return f"KeypointSet({self.name!r}, {self.num_keypoints} keypoints, {self.num_limbs} limbs)"


def names_a_file(spec: str) -> bool:
    """Whether a keypoint-set spec is a path to a JSON file rather than a shipped set's name: it ends in .json or
    holds a path separator (either, on any system)."""
    return spec.lower().endswith(".json") or "/" in spec or os.sep in spec


def load_keypoint_set(spec: "str | os.PathLike | Mapping | KeypointSet") -> KeypointSet:
    """A shipped set by name ('coco'), a JSON file path, a dict (as stored in a checkpoint), or a set."""
    if isinstance(spec, KeypointSet):
        return spec
    if isinstance(spec, Mapping):
        return KeypointSet.from_dict(spec, source=f"<embedded '{spec.get('name', '?')}'>")
    spec = os.fspath(spec)
    if not names_a_file(spec):
        shipped = os.path.join(SHIPPED_SETS_DIR, spec + ".json")
        if not os.path.exists(shipped):
            raise KeypointSetError(f"unknown keypoint set '{spec}': not a shipped set "
                                   f"({', '.join(shipped_set_names())}) nor a .json file")
        spec = shipped
    if not os.path.exists(spec):
        raise KeypointSetError(f"keypoint set file {spec} does not exist")
    try:
        with open(spec) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise KeypointSetError(f"keypoint set {spec}: not valid JSON ({e})") from None
    return KeypointSet.from_dict(data, source=spec)


def find_shipped_set_for_names(names: Iterable[str]) -> KeypointSet | None:
    """The shipped set whose keypoints an annotation file's names spell, in order, if any."""
    names = list(names)
    for set_name in shipped_set_names():
        candidate = load_keypoint_set(set_name)
        if candidate.matches_names(names):
            return candidate
    return None
