"""Data sets: calibration and evaluation data (text, JSON lines, token ids), content-addressed."""
