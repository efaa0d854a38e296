"""The revgan demo: generated data, a short training run, pages and numbers."""
