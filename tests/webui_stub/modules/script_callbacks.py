"""Stand-in for modules/script_callbacks.py (A1111 v1.10.1; identical in Forge): registration with
on_*(callback, *, name=None), and the *_callback functions the WebUI calls. Like the real, an exception in a
callback is reported, not raised; the stand-in keeps it in `reported` so tests can assert there were none."""
import dataclasses
import inspect
import os

reported = []   # stand-in only: (callback name, exception)


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: any
    name: str = "unnamed"


callback_map = dict(callbacks_app_started=[], callbacks_ui_tabs=[], callbacks_ui_settings=[],
                    callbacks_after_component=[], callbacks_before_component=[], callbacks_infotext_pasted=[],
                    callbacks_script_unloaded=[], callbacks_before_image_saved=[],
                    callbacks_image_saved=[])


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else 'unknown file'
    callback_name = f"base/{os.path.basename(filename)}/{category}" + (f'/{name}' if name is not None else '')
    callbacks.append(ScriptCallback(filename, fun, callback_name))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _call(category, *args, **kwargs):
    results = []
    for c in callback_map[f"callbacks_{category}"]:
        try:
            results.append(c.callback(*args, **kwargs))
        except Exception as e:
            reported.append((c.name, e))
    return results


def app_started_callback(demo, app):
    _call("app_started", demo, app)


def ui_tabs_callback():
    res = []
    for r in _call("ui_tabs"):
        res += r or []
    return res


def ui_settings_callback():
    _call("ui_settings")


def after_component_callback(component, **kwargs):
    _call("after_component", component, **kwargs)


def infotext_pasted_callback(infotext: str, params):
    _call("infotext_pasted", infotext, params)


def before_image_saved_callback(params: ImageSaveParams):
    _call("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams):
    _call("image_saved", params)


def on_before_image_saved(callback, *, name=None):
    add_callback(callback_map['callbacks_before_image_saved'], callback, name=name, category='before_image_saved')


def on_image_saved(callback, *, name=None):
    add_callback(callback_map['callbacks_image_saved'], callback, name=name, category='image_saved')


def on_app_started(callback, *, name=None):
    add_callback(callback_map['callbacks_app_started'], callback, name=name, category='app_started')


def on_ui_tabs(callback, *, name=None):
    add_callback(callback_map['callbacks_ui_tabs'], callback, name=name, category='ui_tabs')


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map['callbacks_ui_settings'], callback, name=name, category='ui_settings')


def on_after_component(callback, *, name=None):
    add_callback(callback_map['callbacks_after_component'], callback, name=name, category='after_component')


def on_before_component(callback, *, name=None):
    add_callback(callback_map['callbacks_before_component'], callback, name=name, category='before_component')


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map['callbacks_infotext_pasted'], callback, name=name, category='infotext_pasted')


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map['callbacks_script_unloaded'], callback, name=name, category='script_unloaded')
