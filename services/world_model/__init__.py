"""WorldModel service: server-side sessions around an action-conditioned world model."""
