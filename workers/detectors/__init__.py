"""Detector kernels and processes: numba analytics and detections over the bus (issue 5)."""
