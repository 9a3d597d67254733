def apply(input):
    words = input.split()
    return {"words": words, "count": len(words)}
