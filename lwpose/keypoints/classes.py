"""Several kinds of subject in one keypoint set: classes, each with its own keypoints, limbs, root and sigmas.

A multi-class set file lists its classes; each class is written exactly as a single-class set (its own keypoint
names, limbs between them, root, fill-in limbs, sigmas, optional flip pairs and aliases):

    {"name": "people_animals",
     "classes": [{"name": "person", "keypoints": [...], "limbs": [...], "root": [...], "sigmas": [...]},
                 {"name": "animal", "keypoints": [...], "limbs": [...], "root": [...], "sigmas": [...]}],
     "shared": [["person:nose", "animal:nose"]]}                     # optional: one channel for both

The network sees one set of channels. The first class is the base: its keypoints keep their names as channel names
(and its PAF order), so a single-class model of it grows into the multi-class set; the keypoints of every other
class are named `class/keypoint`. Two classes share a channel only where `shared` says so (both keypoints on the same
side). Every table stays derived: the channels and limbs of each class, the PAF channels, the flip permutation
(within each class, from its own names). Grouping assembles each class from its own channels and limbs only
(lwpose/codec.py), so no instance is ever built from another class's keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    from lwpose.keypoints.keypoint_set import KeypointSet

CLASS_ENTRIES = ("name", "description", "classes", "shared")


@dataclass(frozen=True)
class KeypointClass:
    """One kind of subject in a keypoint set: `keypoint_set` is the class on its own (its own names and limbs),
    `channels` (K_c,) the whole set's keypoint channel of each of its keypoints, `limbs` (L_c,) the whole set's
    index of each of its limbs (in the class's own limb order), `paf_channels` (2 L_c,) the whole set's PAF
    channels in the order the class's own set reads them: `heatmaps[channels]` and `pafs[paf_channels]` are the
    maps `keypoint_set` decodes."""

    name: str
    index: int
    keypoint_set: "KeypointSet"
    channels: np.ndarray
    limbs: np.ndarray
    paf_channels: np.ndarray
    assembly_order: np.ndarray  # the whole set's limbs of this class, in the order grouping takes them

    def __post_init__(self):
        for table in (self.channels, self.limbs, self.paf_channels, self.assembly_order):
            table.setflags(write=False)


def _class(whole: "KeypointSet", index: int, class_set: "KeypointSet", channels: np.ndarray,
           limbs: np.ndarray) -> KeypointClass:
    paf_channels = np.empty(class_set.num_pafs, np.int64)
    for limb, (x_channel, y_channel) in zip(limbs, class_set.limb_paf_channels):
        paf_channels[x_channel], paf_channels[y_channel] = whole.limb_paf_channels[limb]
    return KeypointClass(class_set.name, index, class_set, channels, limbs, paf_channels,
                         np.asarray(limbs)[class_set.assembly_order])


def single_class(keypoint_set: "KeypointSet") -> KeypointClass:
    """A single-class set as its own one class."""
    return _class(keypoint_set, 0, keypoint_set, np.arange(keypoint_set.num_keypoints),
                  np.arange(keypoint_set.num_limbs))


def channel_name(class_index: int, class_name: str, keypoint: str) -> str:
    """The whole set's name of a class's keypoint: the base class keeps its names."""
    return keypoint if class_index == 0 else f"{class_name}/{keypoint}"


def multi_class_set(cls, data: Mapping, source: str) -> "KeypointSet":
    """A KeypointSet (`cls`) from a multi-class description; every class is checked as a set of its own first, so
    a mistake is reported with the class and the entry."""
    from lwpose.keypoints.keypoint_set import KeypointSetError

    def fail(message: str) -> KeypointSetError:
        return KeypointSetError(f"keypoint set {source}: {message}")

    unknown = sorted(set(data) - set(CLASS_ENTRIES))
    if unknown:
        raise fail(f"unknown entries {unknown} beside 'classes' (known: {', '.join(CLASS_ENTRIES)}; a class's own "
                   "keypoints, limbs, root and sigmas go inside its entry of 'classes')")
    entries = data["classes"]
    if not isinstance(entries, list) or not entries:
        raise fail("'classes' must be a non-empty list of classes")
    classes: list = []
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise fail(f"classes[{i}]: expected a class object, got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not name or "/" in name or ":" in name:
            raise fail(f"classes[{i}]: 'name' must be a non-empty name without '/' or ':'")
        if name in names:
            raise fail(f"classes[{i}]: class '{name}' repeats classes[{names[name]}]")
        if "classes" in entry:
            raise fail(f"classes[{i}] '{name}': a class cannot hold classes of its own")
        names[name] = i
        classes.append(cls.from_dict(entry, source=f"{source}: classes[{i}] '{name}'"))

    # which channel each class keypoint uses: its own, or a shared one
    channel_of: dict[tuple[int, str], str] = {}
    shared = data.get("shared") or []
    if not isinstance(shared, list):
        raise fail("'shared' must be a list of groups like [\"person:nose\", \"animal:nose\"]")
    for g, group in enumerate(shared):
        if not (isinstance(group, list) and len(group) >= 2 and all(isinstance(m, str) for m in group)):
            raise fail(f"shared[{g}] = {group!r}: expected two or more 'class:keypoint' names")
        members = []
        for member in group:
            class_name, _, keypoint = member.partition(":")
            if class_name not in names:
                raise fail(f"shared[{g}]: '{member}': unknown class '{class_name}' (classes: {', '.join(names)})")
            c = names[class_name]
            if keypoint not in classes[c].index:
                raise fail(f"shared[{g}]: '{member}': class '{class_name}' has no keypoint '{keypoint}'")
            if (c, keypoint) in channel_of:
                raise fail(f"shared[{g}]: '{member}' is shared twice")
            members.append((c, keypoint))
        if len({c for c, _ in members}) != len(members):
            raise fail(f"shared[{g}]: two keypoints of one class cannot share a channel")
        sides = {classes[c].sides[classes[c].index[k]] for c, k in members}
        if len(sides) > 1:
            raise fail(f"shared[{g}] = {group}: the keypoints are on different sides ({', '.join(sorted(sides))}); "
                       "a shared channel must mean the same side for every class, or flipping would break it")
        c0, k0 = min(members)
        for c, k in members:
            channel_of[(c, k)] = channel_name(c0, classes[c0].name, k0)

    channels: list[str] = []
    sigmas: list[float] = []
    for c, class_set in enumerate(classes):
        for k, keypoint in enumerate(class_set.keypoints):
            channel = channel_of.setdefault((c, keypoint), channel_name(c, class_set.name, keypoint))
            if channel not in channels:
                channels.append(channel)
                sigmas.append(class_set.sigmas[k])

    def qualified(c: int, pair) -> tuple[str, str]:
        return channel_of[(c, pair[0])], channel_of[(c, pair[1])]

    limbs, fill_in, flip_pairs = [], [], []
    paf_order = []
    for c, class_set in enumerate(classes):
        limbs += [qualified(c, pair) for pair in class_set.limbs]
        fill_in += [qualified(c, pair) for pair in class_set.fill_in_limbs]
        order = class_set.paf_order if class_set.paf_order is not None else class_set.limbs
        paf_order += [qualified(c, pair) for pair in order]
        for a, b in class_set.flip_pairs:
            pair = qualified(c, (class_set.keypoints[a], class_set.keypoints[b]))
            if pair not in flip_pairs and pair[::-1] not in flip_pairs:
                flip_pairs.append(pair)
    root = list(dict.fromkeys(channel_of[(c, r)] for c, class_set in enumerate(classes) for r in class_set.root))
    aliases: dict[str, tuple[str, ...]] = {}
    for c, class_set in enumerate(classes):
        for keypoint, spellings in class_set.aliases.items():
            channel = channel_of[(c, keypoint)]
            extra = spellings if c == 0 else tuple(channel_name(c, class_set.name, s) for s in spellings)
            aliases[channel] = aliases.get(channel, ()) + extra
    base = classes[0]
    derived = {channel_of[(0, k)]: {kind: tuple(channel_of[(0, p)] for p in parts) for kind, parts in rule.items()}
               for k, rule in base.derived_keypoints.items()}
    whole = cls(name=str(data.get("name") or source), keypoints=tuple(channels), limbs=tuple(limbs),
                root=tuple(root), sigmas=tuple(sigmas), fill_in_limbs=tuple(fill_in), paf_order=tuple(paf_order),
                flip_pairs_override=tuple(flip_pairs), aliases=aliases, derived_keypoints=derived,
                head_size_keypoints=(tuple(channel_of[(0, k)] for k in base.head_size_keypoints)
                                     if base.head_size_keypoints else None),
                description=str(data.get("description", "")), source=source,
                class_sets=tuple(classes), class_data={"classes": [c.to_dict() for c in classes],
                                                       **({"shared": shared} if shared else {})})
    whole.validate()
    return whole


def build_classes(whole: "KeypointSet") -> tuple[KeypointClass, ...]:
    """The classes of a multi-class set, each with its channels and limbs in the whole set."""
    out = []
    limb_index = {pair: i for i, pair in enumerate(whole.limbs)}
    for c, class_set in enumerate(whole.class_sets):
        channel_of = _channel_map(whole, c, class_set)
        channels = np.array([whole.index[channel_of[k]] for k in class_set.keypoints], np.int64)
        limbs = np.array([limb_index[(channel_of[a], channel_of[b])] for a, b in class_set.limbs], np.int64)
        out.append(_class(whole, c, class_set, channels, limbs))
    return tuple(out)


def _channel_map(whole: "KeypointSet", c: int, class_set: "KeypointSet") -> dict[str, str]:
    shared = {}
    for group in whole.class_data.get("shared", []):
        members = [m.partition(":")[::2] for m in group]
        indices = [[i for i, s in enumerate(whole.class_sets) if s.name == name][0] for name, _ in members]
        c0, k0 = min(zip(indices, (k for _, k in members)))
        for (name, keypoint), i in zip(members, indices):
            shared[(i, keypoint)] = channel_name(c0, whole.class_sets[c0].name, k0)
    return {k: shared.get((c, k), channel_name(c, class_set.name, k)) for k in class_set.keypoints}
