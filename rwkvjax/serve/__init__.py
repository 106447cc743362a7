"""Using what was learned: sampling and generation from a (tuned) state."""
