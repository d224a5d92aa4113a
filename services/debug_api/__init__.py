"""debug_api."""
