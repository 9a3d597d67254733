def load():
    raise RuntimeError("model file missing: weights.bin")


def apply(input):
    return input
