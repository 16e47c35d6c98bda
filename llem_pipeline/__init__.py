"""llem_pipeline: energy, throughput and latency of LLM inference as a Dagster asset pipeline.

The public models are re-exported here (``from llem_pipeline import ExperimentResult``); importing
this package needs nothing but pydantic.
"""

from llem_pipeline.domain import *  # noqa: F403
from llem_pipeline.domain import __all__ as _domain_all

__version__ = "0.1.0"
__all__ = [*_domain_all, "__version__"]
