"""Stand-in for modules/paths_internal.py (A1111 v1.10.1): the folders the extension reads."""
import os
import tempfile

data_path = os.environ.get("TLOK_STUB_DATA", tempfile.mkdtemp(prefix="webui-stub-"))
models_path = os.path.join(data_path, "models")
default_output_dir = os.path.join(data_path, "outputs")
