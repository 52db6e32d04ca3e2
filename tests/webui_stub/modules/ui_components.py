"""Stand-in for modules/ui_components.py (A1111 v1.10.1): ToolButton."""
import gradio as gr


class FormComponent:
    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    """Small button with single emoji as text, fits inside gradio forms"""

    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        kwargs.pop("tooltip", None)   # the real WebUI's gradio patch accepts it; plain gradio does not
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"
