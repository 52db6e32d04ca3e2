"""TLOK Workflow: the WebUI's entry point (A1111 1.10, Forge). Thin on purpose.

The WebUI runs this file with the extension root on sys.path only while its scripts load, so the package is
imported now; everything else lives in tlok_workflow/webui_host.py.
"""
from tlok_workflow import webui_host

extension = webui_host.register()   # its callbacks are the WebUI's now; a Reload UI makes another
