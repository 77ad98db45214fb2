"""Evaluation-metric collectors: typed EMetrics records from what a job writes."""
