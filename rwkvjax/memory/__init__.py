"""The session memory: a history of what the user did and context tables over it, mixed online with the frozen
model by small learned mixers (`memory`: the value; `kernels`: the compiled loops; `lm`: the model's side)."""
