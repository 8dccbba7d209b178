"""Cross-scoring, experiments and reports."""
