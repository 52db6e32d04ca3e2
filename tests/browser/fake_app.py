"""The standalone app on the fake backend: the browser test's server where diffusers is not installed (the
gradio 3.41 venv, like the WebUI's). Usage: python tests/browser/fake_app.py OUT_DIR PORT"""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from fakes import FakeBackend  # noqa: E402
from tlok_workflow.app import make_host, serve  # noqa: E402

if __name__ == "__main__":
    serve(make_host(Path(sys.argv[1]), backend_factory=FakeBackend), int(sys.argv[2]))
