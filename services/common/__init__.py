"""What the model services share: server bootstrap, batcher, auth, errors, validation, specs."""
