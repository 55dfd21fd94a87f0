"""Judging finished images: independent classifiers, image statistics and the comparison report."""
