"""bench/stage3: the end of the pipeline; answers its input (a stream chunk by chunk, as it arrives)."""


def apply(input):
    return input
