"""TLOK Workflow: the 4elements-diffusion recipe (vanilla txt2img → style img2img → upscale ladder → face
inpaint) as one engine for the AUTOMATIC1111 WebUI, Forge, and standalone diffusers.

This package imports no gradio, torch or WebUI modules at import time; those live in the modules that
need them (ui, backends).
"""
__version__ = "0.1.0"
