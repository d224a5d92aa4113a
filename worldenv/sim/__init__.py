"""LIBERO ground truth: env adapter, env process pool, scripted expert, demos, starts, explore, eval."""
