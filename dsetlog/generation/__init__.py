"""Generating datasets: questions files (questions.py), the document pipeline (document.py runs the stages:
titling, generating, augmenting, scoring with judging, splitting, benchmark, exporting; plan.py plans the
dataset and its slots), and regeneration of chosen entries (regeneration.py)."""
