"""reflector."""
