"""Models: the registry of base models, their materialisation and loading."""
