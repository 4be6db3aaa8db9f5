"""Fuzz targets and the engines that run them (``python -m tests.fuzz``, ``make fuzz``)."""
