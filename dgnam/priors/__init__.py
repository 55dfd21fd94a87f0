"""The generator priors and other artifacts that ship with dgnam (package data)."""
