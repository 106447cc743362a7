"""Files in and out: checkpoint formats and the hub, safetensors export, training checkpoints, tuned states."""
