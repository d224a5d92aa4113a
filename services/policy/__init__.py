"""Policy service: Laplace action chunks with log-probs and hot weight swaps."""
