"""The generation pipeline: the per-job Processing context, its stages and the script runner."""
