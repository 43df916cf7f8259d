"""Segment catalogs: named rules and exclusive groups, read from TOML.

A catalog file holds ``[[segment]]`` tables (``name``, ``rule``, optional ``description``) and
``[[group]]`` tables (``name``, ``segments``, optional ``fallback`` and ``description``)::

    [[segment]]
    name = "vip"
    description = "Top spenders who ordered recently."
    rule = "m_score = 5 AND recency_days <= 90"

    [[group]]
    name = "tier"
    segments = ["vip", "active"]
    fallback = "other"

Names are lowercase identifiers, unique across segments and groups (both become output
columns). Rules are parsed and checked when the catalog is compiled or checked
(:func:`fastseg.rules.compile.check_catalog`), not when it is loaded, so a user catalog may
refer to built-in segments and be merged with :meth:`Catalog.merge`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from fastseg.errors import InputError, RuleError

__all__ = [
    "Catalog",
    "GroupDef",
    "SegmentDef",
    "builtin_catalog",
    "builtin_markdown",
    "load_catalog",
]

NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SEGMENT_KEYS = ("name", "description", "rule")
_GROUP_KEYS = ("name", "description", "segments", "fallback")
_TOP_KEYS = ("segment", "group")


#: names a segment or group cannot take: the membership outputs already have these columns
#: (the wide layout and ``groups.parquet`` hold ``customer_id`` beside one column per name)
RESERVED_NAMES = ("customer_id",)
#: and a segment cannot be called ``segment``: ``overlaps.csv`` labels its rows in a column of
#: that name, beside one column per segment
RESERVED_SEGMENT_NAMES = ("segment",)


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str):
        msg = f"{what} name must be a string, got {name!r}"
        raise RuleError(msg)
    if name in RESERVED_NAMES and what in ("segment", "group"):
        msg = (
            f"{what} name {name!r} is taken by the output column of that name (the wide "
            f"membership and groups.parquet have a column per {what} beside it): choose another, "
            f"e.g. '{name}_{what}'"
        )
        raise RuleError(msg)
    if name in RESERVED_SEGMENT_NAMES and what == "segment":
        msg = (
            f"segment name {name!r} is taken by the output column of that name (overlaps.csv "
            f"labels its rows in a column 'segment', beside one column per segment): choose "
            f"another, e.g. 'my_{name}'"
        )
        raise RuleError(msg)
    if not NAME_RE.fullmatch(name):
        fixed = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:63] or "my_segment"
        if fixed[0].isdigit():
            fixed = "_" + fixed[:62]
        msg = (
            f"{what} name {name!r} is not valid: use at most 63 lowercase letters, digits and "
            f"underscores, not starting with a digit (e.g. {fixed!r})"
        )
        raise RuleError(msg)


@dataclass(frozen=True)
class SegmentDef:
    """One named segment.

    Attributes
    ----------
    name : str
        Lowercase identifier (``[a-z_][a-z0-9_]*``).
    description : str
        One sentence for people.
    rule : str
        The condition in the rule language (see ``docs/rules.md``).
    builtin : bool
        Shipped with fastseg; compiling skips it (instead of failing) when the data lacks its
        fields.
    """

    name: str
    description: str
    rule: str
    builtin: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "segment")
        if not isinstance(self.description, str):
            msg = f"segment '{self.name}': description must be a string"
            raise RuleError(msg)
        if not isinstance(self.rule, str) or not self.rule.strip():
            msg = f"segment '{self.name}': rule must be a non-empty string"
            raise RuleError(msg)


@dataclass(frozen=True)
class GroupDef:
    """An exclusive grouping: each customer gets the first listed segment it belongs to, or
    ``fallback`` when it belongs to none."""

    name: str
    segments: tuple[str, ...]
    fallback: str = "other"
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "group")
        if isinstance(self.segments, str) or not all(isinstance(s, str) for s in self.segments):
            msg = f"group '{self.name}': segments must be a list of segment names"
            raise RuleError(msg)
        object.__setattr__(self, "segments", tuple(self.segments))
        if not self.segments:
            msg = f'group \'{self.name}\' lists no segment; add segments = ["a", "b"]'
            raise RuleError(msg)
        dupes = sorted({s for s in self.segments if self.segments.count(s) > 1})
        if dupes:
            msg = f"group '{self.name}' lists segment '{dupes[0]}' twice; keep one"
            raise RuleError(msg)
        _check_name(self.fallback, f"group '{self.name}' fallback")
        if self.fallback in self.segments:
            msg = (
                f"group '{self.name}': fallback '{self.fallback}' is also one of its segments; "
                "choose another label such as 'other'"
            )
            raise RuleError(msg)
        if not isinstance(self.description, str):
            msg = f"group '{self.name}': description must be a string"
            raise RuleError(msg)


@dataclass(frozen=True)
class Catalog:
    """Segments and groups; names are unique across both.

    Examples
    --------
    >>> cat = Catalog((SegmentDef("loyal", "3+ orders", "frequency >= 3"),))
    >>> cat.get("loyal").rule
    'frequency >= 3'
    """

    segments: tuple[SegmentDef, ...] = ()
    groups: tuple[GroupDef, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.segments))
        object.__setattr__(self, "groups", tuple(self.groups))
        seen: dict[str, str] = {}
        for kind, items in (("segment", self.segments), ("group", self.groups)):
            for item in items:
                if item.name in seen:
                    msg = (
                        f"name '{item.name}' is used by two {seen[item.name]}s"
                        if seen[item.name] == kind
                        else f"name '{item.name}' is used by a segment and a group"
                    )
                    raise RuleError(msg + "; names must be unique, rename one")
                seen[item.name] = kind

    @property
    def names(self) -> tuple[str, ...]:
        """Segment names in catalog order."""
        return tuple(s.name for s in self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def get(self, name: str) -> SegmentDef:
        """The segment called ``name``; :class:`RuleError` with a suggestion if there is none."""
        for seg in self.segments:
            if seg.name == name:
                return seg
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        msg = f"no segment '{name}' in the catalog{hint}"
        raise RuleError(msg)

    def group(self, name: str) -> GroupDef:
        """The group called ``name``."""
        for grp in self.groups:
            if grp.name == name:
                return grp
        msg = f"no group '{name}' in the catalog (groups: {', '.join(g.name for g in self.groups)})"
        raise RuleError(msg)

    def merge(
        self, other: Catalog, *, on_conflict: Literal["replace", "error"] = "replace"
    ) -> Catalog:
        """This catalog extended by ``other`` (e.g. built-in + user).

        A segment or group of ``other`` with a name already used here replaces it in place
        (``on_conflict="replace"``, so references such as ``segment(vip)`` follow the new
        definition) or raises :class:`RuleError` (``"error"``). New names are appended.
        """
        if on_conflict not in ("replace", "error"):
            msg = f"on_conflict must be 'replace' or 'error', got {on_conflict!r}"
            raise RuleError(msg)
        mine_seg = {s.name for s in self.segments}
        mine_grp = {g.name for g in self.groups}
        for seg in other.segments:
            if seg.name in mine_grp:
                msg = f"segment '{seg.name}' clashes with a group of the same name; rename it"
                raise RuleError(msg)
        for grp in other.groups:
            if grp.name in mine_seg:
                msg = f"group '{grp.name}' clashes with a segment of the same name; rename it"
                raise RuleError(msg)
        if on_conflict == "error":
            clash = [s.name for s in other.segments if s.name in mine_seg]
            clash += [g.name for g in other.groups if g.name in mine_grp]
            if clash:
                msg = f"'{clash[0]}' is defined in both catalogs; rename it or merge with replace"
                raise RuleError(msg)
        new_seg = {s.name: s for s in other.segments}
        new_grp = {g.name: g for g in other.groups}
        segments = [new_seg.pop(s.name, s) for s in self.segments] + list(new_seg.values())
        groups = [new_grp.pop(g.name, g) for g in self.groups] + list(new_grp.values())
        return Catalog(tuple(segments), tuple(groups))

    def subset(self, names: list[str] | tuple[str, ...]) -> Catalog:
        """Only the named segments (or groups: all their segments) and what they refer to.

        Groups are kept when all their segments are.
        """
        from fastseg.rules.ast import SegmentRef, walk
        from fastseg.rules.parse import parse_rule

        by_name = {s.name: s for s in self.segments}
        want: list[str] = []
        for name in names:
            if name in by_name:
                want.append(name)
            elif any(g.name == name for g in self.groups):
                want.extend(self.group(name).segments)
            else:
                self.get(name)  # raises with a suggestion
        keep: set[str] = set()
        stack = list(want)
        while stack:
            name = stack.pop()
            if name in keep or name not in by_name:
                continue
            keep.add(name)
            tree = parse_rule(by_name[name].rule)
            stack.extend(n.name for n in walk(tree) if isinstance(n, SegmentRef))
        groups = tuple(g for g in self.groups if set(g.segments) <= keep and g.name in names)
        return Catalog(tuple(s for s in self.segments if s.name in keep), groups)

    def to_toml(self) -> str:
        """The catalog as TOML text that :func:`load_catalog` reads back unchanged (except
        for the ``builtin`` flag)."""
        out: list[str] = []
        for seg in self.segments:
            out.append("[[segment]]")
            out.append(f"name = {json.dumps(seg.name)}")
            out.append(f"description = {json.dumps(seg.description, ensure_ascii=False)}")
            out.append(f"rule = {json.dumps(seg.rule, ensure_ascii=False)}")
            out.append("")
        for grp in self.groups:
            out.append("[[group]]")
            out.append(f"name = {json.dumps(grp.name)}")
            if grp.description:
                out.append(f"description = {json.dumps(grp.description, ensure_ascii=False)}")
            out.append(f"segments = [{', '.join(json.dumps(s) for s in grp.segments)}]")
            out.append(f"fallback = {json.dumps(grp.fallback)}")
            out.append("")
        return "\n".join(out)


def _unknown_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            msg = f"{where}: unknown key '{key}'; {hint}(allowed: {', '.join(allowed)})"
            raise RuleError(msg)


def _from_dict(data: dict, origin: str, builtin: bool, errors: list[str] | None = None) -> Catalog:
    """The catalog of a parsed TOML document. With ``errors``, a table with a problem is left
    out and its problem appended (``"{origin}: ..."``) instead of raised."""
    try:
        _unknown_keys(data, _TOP_KEYS, origin)
    except RuleError as exc:
        if errors is None:
            raise
        errors.append(str(exc))
    segments: list[SegmentDef] = []
    groups: list[GroupDef] = []
    for key, kind in (("segment", "segment"), ("group", "group")):
        tables = data.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            msg = f"{origin}: write each {kind} as a [[{key}]] table (double brackets)"
            raise RuleError(msg)
        for i, table in enumerate(tables, start=1):
            label = table.get("name")
            where = (
                f"{origin}: {kind} {label!r}"
                if isinstance(label, str)
                else f"{origin}: {kind} #{i}"
            )
            allowed = _SEGMENT_KEYS if kind == "segment" else _GROUP_KEYS
            required = ("name", "rule") if kind == "segment" else ("name", "segments")
            try:
                _unknown_keys(table, allowed, where)
                for req in required:
                    if req not in table:
                        msg = f"{where}: missing key '{req}'"
                        raise RuleError(msg)
            except RuleError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            try:
                if kind == "segment":
                    segments.append(
                        SegmentDef(
                            table["name"], table.get("description", ""), table["rule"], builtin
                        )
                    )
                else:
                    if not isinstance(table["segments"], list):
                        msg = (
                            f'segments must be a list such as ["a", "b"], got {table["segments"]!r}'
                        )
                        raise RuleError(msg)
                    groups.append(
                        GroupDef(
                            table["name"],
                            tuple(table["segments"]),
                            table.get("fallback", "other"),
                            table.get("description", ""),
                        )
                    )
            except RuleError as exc:
                msg = f"{origin}: {exc}"
                if errors is None:
                    raise RuleError(msg) from None
                errors.append(msg)
    if errors is not None:  # keep the first of each name
        seen: set[str] = set()
        for kind, items in (("segment", segments), ("group", groups)):
            for item in list(items):
                if item.name in seen:
                    items.remove(item)
                    errors.append(
                        f"{origin}: name '{item.name}' is used twice ({kind}); names must be "
                        "unique across segments and groups, rename one"
                    )
                seen.add(item.name)
    try:
        return Catalog(tuple(segments), tuple(groups))
    except RuleError as exc:
        msg = f"{origin}: {exc}"
        raise RuleError(msg) from None


def names_a_file(source: object) -> bool:
    """True when a catalog argument names a file rather than holding TOML text: a ``PathLike``,
    or a one-line string that ends in ``.toml`` or names an existing file."""
    return bool(
        isinstance(source, os.PathLike)
        or (
            isinstance(source, str)
            and "\n" not in source
            and (source.endswith(".toml") or Path(source).is_file())
        )
    )


def load_catalog(
    source: str | os.PathLike[str] | bytes,
    *,
    builtin: bool = False,
    errors: list[str] | None = None,
) -> Catalog:
    """Read a catalog from a TOML file or TOML text.

    Parameters
    ----------
    source : str, path or bytes
        A path (``Path``, or a one-line string naming a file or ending in ``.toml``), or the
        TOML text itself.
    builtin : bool
        Mark its segments as built-in (skipped rather than failing when fields are missing).
    errors : list, optional
        Collect the problems of single tables (invalid or duplicate names, unknown or missing
        keys) here and leave those tables out, instead of raising at the first one (what
        ``fastseg segments check`` does). Invalid TOML still raises.

    Raises
    ------
    InputError
        The file does not exist or cannot be read.
    RuleError
        Invalid TOML, unknown or missing keys, invalid or duplicate names.
    """
    if isinstance(source, bytes):
        text, origin = source.decode("utf-8"), "catalog"
    elif names_a_file(source):
        from fastseg.io import read_text

        origin = str(Path(source))
        text = read_text(source, "catalog file", missing_hint="check the path")
    elif isinstance(source, str):
        text, origin = source, "catalog"
    else:
        msg = f"load_catalog takes a path or TOML text, got {type(source).__name__}"
        raise InputError(msg)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{origin}: invalid TOML: {exc}"
        raise RuleError(msg) from None
    return _from_dict(data, origin, builtin, errors)


@cache
def builtin_catalog() -> Catalog:
    """The catalog shipped with fastseg (``fastseg/rules/builtin.toml``)."""
    text = resources.files("fastseg.rules").joinpath("builtin.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return _from_dict(data, "built-in catalog", builtin=True)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def builtin_markdown() -> str:
    """``docs/segments.md``: every built-in segment and group, generated from builtin.toml."""
    cat = builtin_catalog()
    lines = [
        "# Built-in segments",
        "",
        "<!-- Generated by fastseg.rules.catalog.builtin_markdown(); do not edit by hand. -->",
        "",
        f"fastseg ships {len(cat.segments)} segments and {len(cat.groups)} exclusive groups "
        "(`fastseg/rules/builtin.toml`). A segment whose fields are absent from your data "
        "(for example the profile or event columns) is skipped with a notice. Thresholds in "
        "currency (such as `aov >= 150`) are examples: override a segment by defining one with "
        "the same name in your own catalog. The rule language is described in "
        "[rules.md](rules.md).",
        "",
        "## Segments",
        "",
        "| name | description | rule |",
        "|---|---|---|",
    ]
    for seg in cat.segments:
        rule = " ".join(seg.rule.split())
        lines.append(f"| `{seg.name}` | {_md_escape(seg.description)} | `{_md_escape(rule)}` |")
    lines += ["", "## Groups", ""]
    for grp in cat.groups:
        lines.append(f"### `{grp.name}`")
        lines.append("")
        if grp.description:
            lines.append(grp.description)
            lines.append("")
        order = " → ".join(f"`{s}`" for s in grp.segments)
        lines.append(f"First match wins, in this order: {order}; otherwise `{grp.fallback}`.")
        lines.append("")
    return "\n".join(lines)
