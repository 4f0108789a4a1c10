"""What generation is fed with: projects and their documents, taxonomies, saved parameters and prompts.

- :mod:`dsetlog.catalog.projects`: projects, taxonomies (and reading them from files), custom prompts, saved
  parameters; the ids of projects.
- :mod:`dsetlog.catalog.documents`: ingesting a file: its checks, extraction, chunking and the events, the
  kept original, the ids of documents and chunks.
- :mod:`dsetlog.catalog.extract` and :mod:`dsetlog.catalog.chunking`: text out of a file, and chunks out of text;
  beside them :mod:`~dsetlog.catalog.pdf` (a PDF's paragraphs and headings from its layout),
  :mod:`~dsetlog.catalog.html` (a web page's content without the site's chrome) and
  :mod:`~dsetlog.catalog.sentences` (where sentences end, so where a chunk may end).
- :mod:`dsetlog.catalog.errors`: the catalog's errors, UsageErrors whose kinds say the status and exit code.
"""
