"""A YAML loader for study files that refuses documents whose aliases would expand beyond a budget.

``yaml.safe_load`` builds aliases (``*name``) as shared objects, so a 700-byte "billion laughs" document
loads quickly, but everything that later walks it as a tree (validation, error messages, deep copies)
does exponential work. ``load_yaml_bounded`` composes the document into YAML nodes first (libyaml when
available), measures the size and depth the node graph has once every alias is expanded (one pass over
the distinct nodes), and only builds Python objects when both are within ``StudyLimits``.

``yaml`` is imported inside the function: llem_pipeline.domain imports with nothing but pydantic.
"""

from __future__ import annotations

from typing import Any

from llem_pipeline.domain.errors import ConfigError, truncate_message
from llem_pipeline.domain.study_limits import Deadline, StudyLimits

_CHECK_EVERY = 4096  # nodes between two deadline checks while measuring the node graph


def _children(node: Any) -> list[Any]:
    """Return the child nodes of a YAML node (keys and values of a mapping; items of a sequence)."""
    value = node.value
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, tuple):
                out.extend(item)
            else:
                out.append(item)
        return out
    return []


def expanded_shape(root: Any, source: str, limits: StudyLimits, deadline: Deadline | None = None) -> tuple[int, int, int]:
    """Return (distinct nodes, nodes once every alias is expanded, depth once expanded) of a composed YAML node.

    Iterative, one visit per distinct node. Raises ConfigError when an alias refers to a node that
    contains it (a recursive document), or when the expanded depth exceeds ``limits.max_depth``.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    visited = 0
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children = _children(node)
        if done:
            on_path.discard(nid)
            size[nid] = 1 + sum(size[id(c)] for c in children)
            height[nid] = 1 + max((height[id(c)] for c in children), default=0)
            if height[nid] > limits.max_depth:
                raise ConfigError(
                    f"{source}: the YAML document nests deeper than {limits.max_depth} levels "
                    "(counting aliases expanded): a study needs 3 or 4 levels; flatten the values"
                )
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise ConfigError(
                f"{source}: a YAML alias (*name) refers to a node that contains it (a recursive document): "
                "write the values out instead"
            )
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
        visited += 1
        if deadline is not None and visited % _CHECK_EVERY == 0:
            deadline.check("measuring the YAML document")
    return len(size), size[id(root)], height[id(root)]


def load_yaml_bounded(text: str, source: str, limits: StudyLimits | None = None,
                      deadline: Deadline | None = None) -> Any:
    """Return the Python value of one YAML document (safe tags only; None for an empty document).

    Raises ConfigError naming ``source`` when the text is not valid YAML (messages truncated), when
    its aliases would add more than ``limits.max_alias_nodes`` nodes, nests deeper than
    ``limits.max_depth``, or the deadline passes.
    """
    import yaml  # lazy: llem_pipeline.domain imports with nothing but pydantic

    limits = limits or StudyLimits()
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {truncate_message(str(err), 500)}") from None
        if deadline is not None:
            deadline.check("parsing the YAML")
        if node is None:
            return None
        distinct, expanded, _depth = expanded_shape(node, source, limits, deadline)
        if expanded - distinct > limits.max_alias_nodes:
            raise ConfigError(
                f"{source}: YAML aliases (*name) would expand the document from {distinct:,} to {expanded:,} nodes, "
                f"over the alias budget of {limits.max_alias_nodes:,} added nodes: write the values out, "
                "or reuse fewer or smaller anchors"
            )
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {truncate_message(str(err), 500)}") from None
        except (ValueError, OverflowError) as err:
            if "digits" in str(err):  # Python reads integers of at most 4300 digits
                raise ConfigError(f"{source}: not valid YAML: an integer has more than 4300 digits: "
                                  "write a smaller number") from None
            raise ConfigError(f"{source}: not valid YAML: a value cannot be read: {truncate_message(str(err), 300)}") from None
    finally:
        loader.dispose()
