"""Jobs: one lifecycle for every generation, the background worker of `dset serve`."""
