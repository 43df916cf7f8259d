"""fastseg: fast, exact customer segmentation.

The public API, imported lazily so that ``import fastseg`` (and ``fastseg --help``) stays instant:

- :func:`score` — one row per customer: features, R/F/M scores, RFM cell and group;
- :func:`run` — the main job: features, scores and segments, optionally written to a folder;
- :func:`diff` — who joined and left every segment between two runs, and RFM transitions;
- :func:`export` — who is in segments of a run, as files for an email tool or ad platform;
- :func:`cluster` — behavioural clusters (k-means) with labels, profiles and a saved model;
- :func:`segment` — evaluate segment rules over a scores frame;
- :class:`RFMScorer` — fit/transform RFM scoring with JSON persistence of its edges;
- :func:`generate` — the seeded synthetic retail store;
- :func:`load_catalog`, :func:`builtin_catalog` — segment catalogs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastseg.errors import (
    DataError,
    FastsegError,
    InputError,
    ParameterError,
    RuleError,
    RuleSyntaxError,
    SchemaError,
)

__version__ = "0.1.0"

_LAZY = {
    "score": "fastseg.api",
    "run": "fastseg.api",
    "diff": "fastseg.api",
    "export": "fastseg.api",
    "report": "fastseg.api",
    "predict": "fastseg.api",
    "ReportResult": "fastseg.api",
    "ExportResult": "fastseg.exporting",
    "Changes": "fastseg.changes",
    "segment": "fastseg.api",
    "cluster": "fastseg.api",
    "ClusterModel": "fastseg.clustering",
    "ClusterResult": "fastseg.clustering",
    "ScoreResult": "fastseg.api",
    "RunResult": "fastseg.api",
    "RFMScorer": "fastseg.scoring",
    "parse_thresholds": "fastseg.scoring",
    "SegmentResult": "fastseg.segmenting",
    "load_bitsets": "fastseg.segmenting",
    "generate": "fastseg.synthetic",
    "generate_frames": "fastseg.synthetic",
    "Catalog": "fastseg.rules.catalog",
    "load_catalog": "fastseg.rules.catalog",
    "builtin_catalog": "fastseg.rules.catalog",
}

__all__ = [
    "DataError",
    "FastsegError",
    "InputError",
    "ParameterError",
    "RuleError",
    "RuleSyntaxError",
    "SchemaError",
    "__version__",
    # lazily imported (see _LAZY)
    "Catalog",
    "Changes",
    "ClusterModel",
    "ClusterResult",
    "ExportResult",
    "RFMScorer",
    "ReportResult",
    "RunResult",
    "ScoreResult",
    "SegmentResult",
    "builtin_catalog",
    "cluster",
    "diff",
    "export",
    "generate",
    "generate_frames",
    "load_bitsets",
    "load_catalog",
    "parse_thresholds",
    "predict",
    "report",
    "run",
    "score",
    "segment",
]

if TYPE_CHECKING:
    from fastseg.api import (
        ReportResult,
        RunResult,
        ScoreResult,
        cluster,
        diff,
        export,
        predict,
        report,
        run,
        score,
        segment,
    )
    from fastseg.changes import Changes
    from fastseg.clustering import ClusterModel, ClusterResult
    from fastseg.exporting import ExportResult
    from fastseg.rules.catalog import Catalog, builtin_catalog, load_catalog
    from fastseg.scoring import RFMScorer, parse_thresholds
    from fastseg.segmenting import SegmentResult, load_bitsets
    from fastseg.synthetic import generate, generate_frames


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'fastseg' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
