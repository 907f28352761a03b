"""Labelled data sets and task generators with exact answers, built offline (one module per source)."""
