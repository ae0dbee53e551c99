"""The output contract, answer values and boxes, bounded equivalence checks, the rewards and their registry."""
