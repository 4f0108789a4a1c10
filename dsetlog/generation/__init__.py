"""Generating datasets: questions files, the document pipeline, regeneration."""
