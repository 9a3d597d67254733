"""The registry: algorithms, immutable semver versions, resolution, instances."""
