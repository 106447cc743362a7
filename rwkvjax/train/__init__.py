"""State-tuning and pretraining: windows and batches, the learner update, the loop and its hooks, replay."""
