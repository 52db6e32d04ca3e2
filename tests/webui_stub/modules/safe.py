"""Stand-in for modules/safe.py (A1111 v1.10.1): check_pt's check of a zip-format torch file's member names (the
check that refuses files saved by torch >= 2.6: ".format_version" is not an allowed name), and load: the check,
then the file (the stand-in reads an allowed zip's members as its "state dict"); a refused file is reported and
gives None. The stand-in does not unpickle: an old-format (non-zip) pickle passes."""
import re
import zipfile

from modules import errors, shared

allowed_zip_names_re = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$")
data_pkl_re = re.compile(r"^([^/]+)/data\.pkl$")


def check_zip_filenames(filename, names):
    for name in names:
        if allowed_zip_names_re.match(name):
            continue
        raise Exception(f"bad file inside {filename}: {name}")


def check_pt(filename, extra_handler):
    try:
        with zipfile.ZipFile(filename) as z:
            check_zip_filenames(filename, z.namelist())
            if not [f for f in z.namelist() if data_pkl_re.match(f)]:
                raise Exception(f"data.pkl not found in {filename}")
    except zipfile.BadZipfile:
        pass


def load(filename, *args, **kwargs):
    try:
        if not shared.cmd_opts.disable_safe_unpickle:
            check_pt(filename, None)
    except Exception:
        errors.report(f"Error verifying pickled file from {filename}\nThe file may be malicious, so the program is "
                      "not going to read it.", exc_info=True)
        return None
    return {"file": filename}
