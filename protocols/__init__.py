"""One module per experiment, each beside its YAML presets; found by circuits.registry."""
