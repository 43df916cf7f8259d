"""The segment rule language: parse rules, load catalogs, compile them to atoms and programs.

See ``docs/rules.md`` for the language and ``docs/segments.md`` for the built-in catalog.
"""

from fastseg.rules.catalog import (
    Catalog,
    GroupDef,
    SegmentDef,
    builtin_catalog,
    builtin_markdown,
    load_catalog,
)
from fastseg.rules.compile import (
    OP_AND,
    OP_ATOM,
    OP_FALSE,
    OP_NOT,
    OP_OR,
    OP_SEGMENT,
    OP_TRUE,
    AggSpec,
    Atom,
    CompiledCatalog,
    CompiledGroup,
    CompiledSegment,
    Problem,
    aggregate_spec,
    catalog_problems,
    check_catalog,
    compile_catalog,
    required_aggregates,
    scores_schema,
)
from fastseg.rules.parse import parse_rule

__all__ = [
    "OP_AND",
    "OP_ATOM",
    "OP_FALSE",
    "OP_NOT",
    "OP_OR",
    "OP_SEGMENT",
    "OP_TRUE",
    "AggSpec",
    "Atom",
    "Catalog",
    "CompiledCatalog",
    "CompiledGroup",
    "CompiledSegment",
    "GroupDef",
    "Problem",
    "SegmentDef",
    "aggregate_spec",
    "builtin_catalog",
    "builtin_markdown",
    "catalog_problems",
    "check_catalog",
    "compile_catalog",
    "load_catalog",
    "parse_rule",
    "required_aggregates",
    "scores_schema",
]
