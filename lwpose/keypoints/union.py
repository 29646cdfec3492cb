"""Union keypoint sets: several sets combined into one, with the user's equivalences between their keypoints.

The first set is the base. Its keypoints, limbs (and PAF channel order), root, fill-in limbs, derived keypoints and
head-size keypoints come first and unchanged, so a model of the base set grows into the union
(lwpose/training/growing.py) with its old channels in their old places. Keypoints of the other sets follow, in their
sets' order, unless the same name or an equivalence (`same`) makes them a keypoint already there; `drop` leaves
keypoints out. Every other name of a merged keypoint becomes an alias of the kept one, so converting a source by
name (datasets/conversion.py) lands its keypoints where the union put them without any table of its own.

A union is described by a plain dict (what a mix recipe's `"union"` entry and `make_keypoint_set.py --spec` hold):

    {"name": "lwop18_head_top", "sets": ["lwop18", "aic", "mpii"],
     "same": [["aic:head_top", "mpii:head_top"], ["lwop18:neck", "mpii:thorax"]],
     "drop": ["mpii:pelvis", "mpii:upper_neck"],
     "limbs": [["neck", "head_top"]],                        # optional: default, carried from the new keypoints' sets
     "derived": {"pelvis": ["left_hip", "right_hip"]}}       # optional: midpoint rules
"""
from __future__ import annotations

from typing import Mapping, Sequence

from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set, normalize_name

UNION_ENTRIES = ("name", "description", "sets", "same", "drop", "limbs", "derived")


class _Union:
    """The union's keypoints as they are gathered: one slot per union keypoint, each with its members."""

    def __init__(self, where: str):
        self.where = where
        self.names: list[str] = []
        self.sigmas: list[float] = []
        self.aliases: list[list[str]] = []
        self.slot_of: dict[tuple[int, int], int] = {}  # (set index, keypoint index) -> slot

    def fail(self, message: str) -> KeypointSetError:
        return KeypointSetError(f"{self.where}: {message}")

    def slot_named(self, name: str) -> int | None:
        """The slot called `name`, or having it as another name (conversion by name would land there too)."""
        wanted = normalize_name(name)
        for slot, existing in enumerate(self.names):
            if normalize_name(existing) == wanted:
                return slot
        for slot, alias_list in enumerate(self.aliases):
            if any(normalize_name(a) == wanted for a in alias_list):
                return slot
        return None

    def add(self, member: tuple[int, int], keypoint_set: KeypointSet, slot: int | None) -> int:
        name = keypoint_set.keypoints[member[1]]
        if slot is None:
            self.names.append(name)
            self.sigmas.append(keypoint_set.sigmas[member[1]])
            self.aliases.append([])
            slot = len(self.names) - 1
        for alias in (name, *keypoint_set.aliases.get(name, ())):
            if normalize_name(alias) != normalize_name(self.names[slot]) and alias not in self.aliases[slot]:
                self.aliases[slot].append(alias)
        self.slot_of[member] = slot
        return slot


def _parse_member(reference, sets: Sequence[KeypointSet], entry: str, union: _Union) -> tuple[int, int]:
    """'set:keypoint' -> (set index, keypoint index)."""
    if not isinstance(reference, str) or ":" not in reference:
        raise union.fail(f"{entry} = {reference!r}: expected 'set:keypoint' (e.g. 'aic:head_top')")
    set_name, keypoint = (part.strip() for part in reference.split(":", 1))
    names = [s.name for s in sets]
    if set_name not in names:
        raise union.fail(f"{entry} = '{reference}': '{set_name}' is not one of the sets ({', '.join(names)})")
    index = names.index(set_name)
    found = sets[index].find(keypoint)
    if found is None:
        raise union.fail(f"{entry} = '{reference}': keypoint set '{set_name}' has no keypoint '{keypoint}' "
                         f"(it has {', '.join(sets[index].keypoints)})")
    return index, found


def _name_pairs(value, entry: str, union: _Union) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2
                                              and all(isinstance(n, str) for n in p) for p in value):
        raise union.fail(f"'{entry}' must be a list of [keypoint, keypoint] pairs")
    return [(a, b) for a, b in value]


def build_union_set(spec: Mapping, where: str = "union") -> KeypointSet:
    """The union keypoint set a spec describes (see the module docstring); a KeypointSetError names the spec's
    entry when a set, a keypoint or a limb is unknown, or when the result is not a valid keypoint set."""
    return KeypointSet.from_dict(union_set_data(spec, where), source=where)


def union_set_data(spec: Mapping, where: str = "union") -> dict:
    """The union's keypoint-set JSON object (with a `union_of` note recording how it was made)."""
    union = _Union(where)
    if not isinstance(spec, Mapping):
        raise union.fail("a union is a JSON object with 'sets' and optional 'same', 'drop', 'limbs', 'derived'")
    unknown = sorted(set(spec) - set(UNION_ENTRIES))
    if unknown:
        raise union.fail(f"unknown entries {unknown} (known: {', '.join(UNION_ENTRIES)})")
    set_specs = spec.get("sets")
    if not isinstance(set_specs, list) or len(set_specs) < 2:
        raise union.fail("'sets' must list at least two keypoint sets (shipped names or JSON files), the base first")
    sets = []
    for i, set_spec in enumerate(set_specs):
        try:
            sets.append(load_keypoint_set(set_spec))
        except KeypointSetError as e:
            raise union.fail(f"sets[{i}]: {e}") from None
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise union.fail(f"sets: two sets share a name ({', '.join(names)}); keypoints are referred to as "
                         "'set:keypoint', so each set needs its own name")

    dropped = set()
    for i, reference in enumerate(spec.get("drop") or []):
        member = _parse_member(reference, sets, f"drop[{i}]", union)
        if member[0] == 0:
            raise union.fail(f"drop[{i}] = '{reference}': the base set '{names[0]}' stays whole (a model of it grows "
                             "into the union); make another set the base to leave its keypoints out")
        dropped.add(member)
    group_of: dict[tuple[int, int], int] = {}
    for g, group in enumerate(spec.get("same") or []):
        if not isinstance(group, list) or len(group) < 2:
            raise union.fail(f"same[{g}] = {group!r}: list two or more 'set:keypoint' names that are one point")
        members = [_parse_member(reference, sets, f"same[{g}][{m}]", union) for m, reference in enumerate(group)]
        for m, member in enumerate(members):
            if member in dropped:
                raise union.fail(f"same[{g}][{m}] = '{group[m]}' is also dropped")
            if member in group_of:
                raise union.fail(f"same[{g}][{m}] = '{group[m]}' is already in same[{group_of[member]}]")
            group_of[member] = g

    # Gather the slots: the base set's keypoints first, in order; then each set's keypoints that are new.
    group_slot: dict[int, int] = {}
    for s, keypoint_set in enumerate(sets):
        for k in range(keypoint_set.num_keypoints):
            member = (s, k)
            if member in dropped:
                continue
            group = group_of.get(member)
            slot = group_slot.get(group) if group is not None else None
            if slot is None and s > 0:
                slot = union.slot_named(keypoint_set.keypoints[k])
            taken = [m for m, used in union.slot_of.items() if used == slot and m[0] == s] if slot is not None else []
            if taken:
                raise union.fail(f"'{names[s]}:{keypoint_set.keypoints[k]}' and "
                                 f"'{names[s]}:{keypoint_set.keypoints[taken[0][1]]}' would become one keypoint "
                                 f"'{union.names[slot]}' (check 'same' and keypoint names)")
            slot = union.add(member, keypoint_set, slot)
            if group is not None:
                group_slot.setdefault(group, slot)
    for slot, alias_list in enumerate(union.aliases):
        for alias in alias_list:
            other = union.slot_named(alias)
            if other != slot:
                raise union.fail(f"'{alias}' would name two keypoints of the union, '{union.names[slot]}' and "
                                 f"'{union.names[other]}' (check 'same')")
    base = sets[0]
    base_count = base.num_keypoints

    def union_name(s: int, keypoint: str) -> str | None:
        slot = union.slot_of.get((s, sets[s].index[keypoint]))
        return None if slot is None else union.names[slot]

    # Limbs: the base's, then those joining the new keypoints (given, or carried from the sets they came from).
    limbs = [tuple(p) for p in base.limbs]
    fill_in = [tuple(p) for p in base.fill_in_limbs]
    present = {frozenset(p) for p in limbs}
    if spec.get("limbs") is not None:
        for i, (a, b) in enumerate(_name_pairs(spec["limbs"], "limbs", union)):
            for n in (a, b):
                if union.slot_named(n) is None:
                    raise union.fail(f"limbs[{i}] = {[a, b]}: '{n}' is not a keypoint of the union "
                                     f"({', '.join(union.names)})")
            pair = (union.names[union.slot_named(a)], union.names[union.slot_named(b)])
            if frozenset(pair) in present:
                raise union.fail(f"limbs[{i}] = {[a, b]} is already a limb")
            limbs.append(pair)
            present.add(frozenset(pair))
    else:
        for s in range(1, len(sets)):
            carried_fill_in = {frozenset(p) for p in sets[s].fill_in_limbs}
            for a, b in sets[s].limbs:
                pair = (union_name(s, a), union_name(s, b))
                if None in pair or pair[0] == pair[1] or frozenset(pair) in present:
                    continue
                if all(union.slot_named(n) < base_count for n in pair):
                    continue  # joins two base keypoints: the base set's skeleton is kept as it is
                limbs.append(pair)
                present.add(frozenset(pair))
                if frozenset((a, b)) in carried_fill_in:
                    fill_in.append(pair)

    derived = {name: dict(rule) for name, rule in base.derived_keypoints.items()}
    for s in range(1, len(sets)):
        for name, rule in sets[s].derived_keypoints.items():
            target = union_name(s, name)
            parts = [union_name(s, p) if p in sets[s].index else None for p in rule.get("midpoint_of", ())]
            if target is not None and target not in derived and parts and None not in parts:
                derived[target] = {"midpoint_of": parts}
    derived_spec = spec.get("derived") or {}
    if not isinstance(derived_spec, Mapping):
        raise union.fail("'derived' must map a keypoint to the two keypoints it is the midpoint of")
    for name, parts in derived_spec.items():
        if union.slot_named(name) is None or not isinstance(parts, list) or len(parts) != 2 \
                or any(not isinstance(p, str) or union.slot_named(p) is None for p in parts):
            raise union.fail(f"derived['{name}'] = {parts!r}: name a union keypoint and the two union keypoints it "
                             "is the midpoint of")
        derived[union.names[union.slot_named(name)]] = {"midpoint_of": [union.names[union.slot_named(p)]
                                                                         for p in parts]}

    head = base.head_size_keypoints
    if head is None:
        for s in range(1, len(sets)):
            mapped = [union_name(s, n) for n in sets[s].head_size_keypoints or ()]
            if mapped and None not in mapped:
                head = tuple(mapped)
                break

    data = {
        "name": str(spec.get("name") or "_".join(names)),
        "description": str(spec.get("description") or f"Union of {', '.join(names)} "
                                                       "(scripts/make_keypoint_set.py)."),
        "keypoints": list(union.names),
        "root": list(base.root),
        "limbs": [list(p) for p in limbs],
        "fill_in_limbs": [list(p) for p in fill_in],
        "sigmas": list(union.sigmas),
    }
    if base.paf_order is not None:  # old PAF channels stay where they were; new limbs follow
        data["paf_order"] = [list(p) for p in base.paf_order] + [list(p) for p in limbs[len(base.limbs):]]
    aliases = {union.names[slot]: alias_list for slot, alias_list in enumerate(union.aliases) if alias_list}
    if aliases:
        data["aliases"] = aliases
    if derived:
        data["derived_keypoints"] = derived
    if head:
        data["head_size_keypoints"] = list(head)
    flip_pairs = _member_flip_pairs(sets, union)
    if flip_pairs != set(KeypointSet.from_dict(data, source=where).flip_pairs):
        data["flip_pairs"] = [[union.names[a], union.names[b]] for a, b in sorted(flip_pairs)]
    data["union_of"] = {"sets": names, "same": [list(g) for g in spec.get("same") or []],
                        "drop": list(spec.get("drop") or [])}
    return data


def _member_flip_pairs(sets: Sequence[KeypointSet], union: _Union) -> set[tuple[int, int]]:
    """Left/right pairs of the union as the member sets pair them (the first set to pair a keypoint decides)."""
    pairs: set[tuple[int, int]] = set()
    paired: set[int] = set()
    for s, keypoint_set in enumerate(sets):
        for a, b in keypoint_set.flip_pairs:
            slots = union.slot_of.get((s, a)), union.slot_of.get((s, b))
            if None in slots or slots[0] in paired or slots[1] in paired:
                continue
            pairs.add((slots[0], slots[1]) if slots[0] < slots[1] else (slots[1], slots[0]))
            paired.update(slots)
    return pairs
