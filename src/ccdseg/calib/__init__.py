"""Calibration from the data: row pedestal, robust noise, gain."""
