"""Deployables: the three gRPC model services (world_model, reflector, policy) and debug_api."""
