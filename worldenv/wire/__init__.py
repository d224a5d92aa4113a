"""The wire contract: generated stubs live in `worldenv.v1`; this package holds the codec."""
