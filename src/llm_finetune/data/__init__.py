"""Data layer: read sources, align them to the canonical schema, split them."""
