"""Stand-in for Forge's lib_controlnet/external_code.py (Forge Neo 2.26): ControlNetUnit is a dataclass; from_dict
keeps the keys that are its fields (the API's form)."""
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class ControlNetUnit:
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: Optional[Any] = None
    resize_mode: Any = "Crop and Resize"
    processor_res: int = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: Any = "Balanced"
    save_detected_map: bool = True

    @staticmethod
    def from_dict(d: dict) -> "ControlNetUnit":
        return ControlNetUnit(**{k: v for k, v in d.items() if k in vars(ControlNetUnit)})
