"""Measurement: teacher-forced scoring, prequential evaluation and its report, checkpoint inspection."""
