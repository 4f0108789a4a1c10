"""The `dset` command line: argument parsing and printing over the core; a leaf nothing imports."""
