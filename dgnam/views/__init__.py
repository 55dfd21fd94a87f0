"""The views of a network, each a mode of visualize.py: activation maximization, activation maps,
feature inversion and receptive fields."""
