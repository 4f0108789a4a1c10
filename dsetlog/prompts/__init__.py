"""Prompt texts, the parameters that fill them, and parsing the replies they ask for."""
