"""The session memory: a history of what the user did and context tables over it, mixed online with the frozen model
by small learned mixers (`memory`: the value; `kernels`: the compiled loops; `lm`: the model's side). This face
stays light to import (the settings' default only)."""

# The default budget: measured on the nine sample sessions (benchmarks/RESULTS.md, "Session memory"), 32 MB
# holds about 4M symbols of history, where a larger budget no longer changes the bits; a laptop does not notice.
DEFAULT_MB = 32.0
