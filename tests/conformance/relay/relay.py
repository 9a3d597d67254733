import algomesh


def apply(input):
    return algomesh.client().algo(input["target"]).pipe(input["input"]).result
