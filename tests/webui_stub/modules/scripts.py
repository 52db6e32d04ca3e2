"""Stand-in for modules/scripts.py (A1111 v1.10.1): basedir() and current_basedir, what an entry script reads; Script,
ScriptBuiltinUI and AlwaysVisible; the ScriptRunner's always-on hooks as processing calls them (each script gets
p.script_args[args_from:args_to]; an exception in a script is reported and the run goes on, as errors.report
does), its callback cache; scripts_txt2img / scripts_img2img, None until the UI is built (tests set them)."""
import os

from modules import errors

current_basedir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
AlwaysVisible = object()
scripts_txt2img = None
scripts_img2img = None


def basedir():
    return current_basedir


class Script:
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    setup_for_ui_only = False

    def title(self):
        raise NotImplementedError()

    def show(self, is_img2img):
        return True

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True

    def show(self, is_img2img):
        return AlwaysVisible


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.callback_map = {}

    def ordered_scripts(self, method_name):
        """The always-on scripts that override the hook (cached by the script count, as the real one does)."""
        count, found = self.callback_map.get(method_name, (-1, None))
        if found is None or count != len(self.alwayson_scripts):
            found = [s for s in self.alwayson_scripts
                     if getattr(type(s), method_name, None) is not getattr(Script, method_name, None)]
            self.callback_map[method_name] = len(self.alwayson_scripts), found
        return found

    def _run(self, method_name, p, *extra):
        for script in self.ordered_scripts(method_name):
            try:
                getattr(script, method_name)(p, *extra, *p.script_args[script.args_from:script.args_to])
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.ordered_scripts("setup"):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from:script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._run("before_process", p)

    def process(self, p):
        self._run("process", p)

    def postprocess(self, p, processed):
        self._run("postprocess", p, processed)
