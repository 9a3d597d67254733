import re


def apply(input):
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", input)).strip().lower()
