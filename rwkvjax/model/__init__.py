"""The model: config, parameter and state pytrees, the x070 forward pass, the WKV recurrence (one dispatch)."""
