"""Reaching a built panel's event functions, in gradio 3.41 (fns beside dependencies) and 4+ (fns with targets)."""


def wired(blocks, component, event: str, outputs: bool = False, then: bool = False):
    """The function an event of a component runs (or, with outputs=True, the components it updates; with
    then=True, the function chained after it with .then)."""
    if isinstance(blocks.fns, dict):
        found = next(f for f in blocks.fns.values() if (component._id, event) in [tuple(t) for t in f.targets])
        if then:
            found = next(f for f in blocks.fns.values() if f.trigger_after == found._id)
    else:
        index = next(i for i, d in enumerate(blocks.dependencies)
                     if component._id in d["targets"] and d["trigger"] == event)
        if then:
            index = next(i for i, d in enumerate(blocks.dependencies) if i > index and d["trigger"] == "then"
                         and component._id in d["targets"])
        found = blocks.fns[index]
    return found.outputs if outputs else found.fn


def labels(component) -> list:
    """What a dropdown or checkbox group lists: a (label, value) pair's label, or the string choice."""
    return [c[0] if isinstance(c, (tuple, list)) else c for c in component.choices]
