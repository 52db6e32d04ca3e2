"""Stand-in for modules/ui_common.py (A1111 v1.10.1): OutputPanel, create_output_panel (same element ids and
send-to bindings; no save/open-folder handlers), create_refresh_button (as the real), plaintext_to_html."""
import dataclasses
import html

import gradio as gr

import modules.infotext_utils as parameters_copypaste
from modules import shared
from modules.ui_components import ToolButton

folder_symbol = '\U0001f4c2'
refresh_symbol = '\U0001f504'


def plaintext_to_html(text, classname=None):
    content = "<br>\n".join(html.escape(x) for x in text.split('\n'))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


@dataclasses.dataclass
class OutputPanel:
    gallery = None
    generation_info = None
    infotext = None
    html_log = None
    button_upscale = None


def create_output_panel(tabname, outdir, toprow=None):
    res = OutputPanel()
    with gr.Column(elem_id=f"{tabname}_results"):
        with gr.Column(variant='panel', elem_id=f"{tabname}_results_panel"):
            with gr.Group(elem_id=f"{tabname}_gallery_container"):
                res.gallery = gr.Gallery(label='Output', show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                                         preview=True, height=shared.opts.gallery_height or None)
            with gr.Row(elem_id=f"image_buttons_{tabname}", elem_classes="image-buttons"):
                ToolButton(folder_symbol, elem_id=f'{tabname}_open_folder')
                if tabname != "extras":
                    ToolButton('💾', elem_id=f'save_{tabname}')
                    ToolButton('🗃️', elem_id=f'save_zip_{tabname}')
                buttons = {
                    'img2img': ToolButton('🖼️', elem_id=f'{tabname}_send_to_img2img'),
                    'inpaint': ToolButton('🎨️', elem_id=f'{tabname}_send_to_inpaint'),
                    'extras': ToolButton('📐', elem_id=f'{tabname}_send_to_extras'),
                }
            with gr.Group():
                res.infotext = gr.HTML(elem_id=f'html_info_{tabname}', elem_classes="infotext")
                res.html_log = gr.HTML(elem_id=f'html_log_{tabname}', elem_classes="html-log")
                res.generation_info = gr.Textbox(visible=False, elem_id=f'generation_info_{tabname}')
            for paste_tabname, paste_button in buttons.items():
                parameters_copypaste.register_paste_params_button(parameters_copypaste.ParamBinding(
                    paste_button=paste_button, tabname=paste_tabname,
                    source_tabname="txt2img" if tabname == "txt2img" else None, source_image_component=res.gallery,
                    paste_field_names=[]))
    return res


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    refresh_components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = None
    for comp in refresh_components:
        label = getattr(comp, 'label', None)
        if label is not None:
            break

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        for k, v in args.items():
            for comp in refresh_components:
                setattr(comp, k, v)
        return [gr.update(**(args or {})) for _ in refresh_components] if len(refresh_components) > 1 \
            else gr.update(**(args or {}))

    refresh_button = ToolButton(value=refresh_symbol, elem_id=elem_id)
    refresh_button.click(fn=refresh, inputs=[], outputs=refresh_components)
    refresh_button.refresh = refresh   # stand-in only: lets a test press it
    return refresh_button
