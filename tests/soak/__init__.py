"""The chaos soak (``python -m tests.soak``, ``make soak``)."""
