"""Projects and their documents: extraction, chunking, taxonomies, saved parameters and prompts."""
