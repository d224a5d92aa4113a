"""Reflector service: p(task done) for imagined videos."""
