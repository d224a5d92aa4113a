"""Measuring the trained models against real LIBERO episodes: the world model's image error as
it drifts open-loop, the reflector's verdicts on real and on imagined videos."""
