"""The serving side of algomesh: sidecars, the ingress, the launcher and `algomesh up`."""
