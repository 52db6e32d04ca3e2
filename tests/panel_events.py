"""Reaching a built panel's event functions, in gradio 3.41 (fns beside dependencies) and 4+ (fns with targets)."""


def wired(blocks, component, event: str, outputs: bool = False):
    """The function an event of a component runs (or, with outputs=True, the components it updates)."""
    if isinstance(blocks.fns, dict):
        found = next(f for f in blocks.fns.values() if (component._id, event) in [tuple(t) for t in f.targets])
    else:
        found = next(f for f, d in zip(blocks.fns, blocks.dependencies)
                     if component._id in d["targets"] and d["trigger"] == event)
    return found.outputs if outputs else found.fn


def labels(component) -> list:
    """What a dropdown or checkbox group lists: a (label, value) pair's label, or the string choice."""
    return [c[0] if isinstance(c, (tuple, list)) else c for c in component.choices]
