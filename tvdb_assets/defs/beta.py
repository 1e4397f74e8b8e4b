"""The beta and preview Dagster APIs we use on purpose, kept quiet in every process.

Dagster warns once per process that loads the definitions (code server, daemon, each run
worker). Imported by `tvdb_assets.defs` itself, so the filters are in place before any
asset or check is declared; a warning about any other API still shows.
"""

import warnings

import dagster as dg

# Dagster 1.13: per-document check results (`AssetCheckSpec(partitions_def=...)`).
warnings.filterwarnings(
    "ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning
)
