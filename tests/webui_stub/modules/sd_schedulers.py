"""Stand-in for modules/sd_schedulers.py (A1111 v1.10.1): Scheduler(name, label, …), schedulers, schedulers_map."""
import dataclasses
from typing import Callable


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: Callable = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


schedulers = [Scheduler(name, label) for name, label in (
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"), ("ddim", "DDIM"),
    ("beta", "Beta"))]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
