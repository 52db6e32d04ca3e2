"""The wheel also carries the extension-root files the package reads at run time; the rest is in pyproject.toml.

The WebUI reads style.css and tlok_presets/ at the extension's root, so that is where they live in git. An
installed package has no extension root, so the wheel gets copies inside the package (tlok_workflow/extension/,
where presets.EXTENSION_ROOT looks first). Of javascript/, the WebUI's, the standalone app reads the stage-table script.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXTENSION_FILES = ["style.css", "tlok_presets", "javascript/tlok_stage_table.js"]


class BuildPyWithExtensionFiles(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        target = Path(self.build_lib) / "tlok_workflow" / "extension"
        for name in EXTENSION_FILES:
            source = Path(name)
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithExtensionFiles})
