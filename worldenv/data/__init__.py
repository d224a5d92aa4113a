"""Data records: imagined episodes (Redis store), start-state banks, LIBERO/robomimic HDF5."""
