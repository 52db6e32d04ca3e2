"""Stand-in for modules/sd_models.py (A1111 v1.10.1): the checkpoint registry and reload_model_weights.

CheckpointInfo, checkpoint_tiles, list_models, get_closet_checkpoint_match, select_checkpoint follow the real
code. The sha256 is "in the cache" for every file but those named in `unhashed` (the real reads the hashes'
cache, cache.json): titles are 'name [hash]', or 'name' until calculate_shorthash hashes the file and re-keys it
under its new title, as the real one does when a checkpoint is first loaded or asked for its hash.
Loading records the checkpoint in `loads` instead of building a model; like the real load_model_weights it
writes opts.data["sd_model_checkpoint"] = info.title. SdModelData.get_sd_model loads the first model under its
lock, as the thread A1111 starts at start-up does (shared.sd_model); a reload_model_weights while that load runs
fails as two overlapping loads do in the real one ("Cannot copy out of meta tensor").
"""
import collections
import hashlib
import os
import re
import threading

from modules import paths_internal, shared

model_path = os.path.abspath(os.path.join(paths_internal.models_path, "Stable-diffusion"))
checkpoints_list = {}
checkpoint_aliases = {}
checkpoint_alisases = checkpoint_aliases
checkpoints_loaded = collections.OrderedDict()
re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")
loads = []          # stand-in only: titles in load order
unhashed = set()    # stand-in only: file names whose sha256 is not in the hash cache yet


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        name = abspath.replace(model_path, '') if abspath.startswith(model_path) else os.path.basename(filename)
        if name.startswith("\\") or name.startswith("/"):
            name = name[1:]
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.name = name
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = model_hash(filename)
        self.sha256 = None if os.path.basename(filename) in unhashed else sha256(name)
        self.shorthash = self.sha256[0:10] if self.sha256 else None
        self.title = name if self.shorthash is None else f'{name} [{self.shorthash}]'
        self.short_title = self.name_for_extra if self.shorthash is None else f'{self.name_for_extra} [{self.shorthash}]'
        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f'{name} [{self.hash}]']
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f'{self.name} [{self.shorthash}]',
                         f'{self.name_for_extra} [{self.shorthash}]']

    def calculate_shorthash(self):
        self.sha256 = sha256(self.name)
        unhashed.discard(os.path.basename(self.filename))
        shorthash = self.sha256[0:10]
        if self.shorthash == shorthash:
            return self.shorthash
        self.shorthash = shorthash
        if self.shorthash not in self.ids:
            self.ids += [self.shorthash, self.sha256, f'{self.name} [{self.shorthash}]',
                         f'{self.name_for_extra} [{self.shorthash}]']
        old_title = self.title
        self.title = f'{self.name} [{self.shorthash}]'
        self.short_title = f'{self.name_for_extra} [{self.shorthash}]'
        replace_key(checkpoints_list, old_title, self.title, self)
        self.register()
        return self.shorthash

    def register(self):
        checkpoints_list[self.title] = self
        for id in self.ids:
            checkpoint_aliases[id] = self


def sha256(name):
    """Stand-in: the sha256 of the file's name, not of its contents."""
    return hashlib.sha256(name.encode()).hexdigest()


def replace_key(d, key, new_key, value):
    keys = list(d.keys())
    d[new_key] = value
    if key not in keys:
        return d
    keys[keys.index(key)] = new_key
    new_d = {k: d[k] for k in keys}
    d.clear()
    d.update(new_d)
    return d


def model_hash(filename):
    return hashlib.sha256(os.path.basename(filename).encode()).hexdigest()[0:8]


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    if os.path.isdir(model_path):
        for root, _, files in os.walk(model_path):
            for file in sorted(files):
                if file.endswith((".ckpt", ".safetensors")) and ".vae." not in file:
                    CheckpointInfo(os.path.join(root, file)).register()


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None
    checkpoint_info = checkpoint_aliases.get(search_string, None)
    if checkpoint_info is not None:
        return checkpoint_info
    found = sorted([info for info in checkpoints_list.values() if search_string in info.title], key=lambda x: len(x.title))
    if found:
        return found[0]
    search_string_without_checksum = re.sub(re_strip_checksum, '', search_string)
    found = sorted([info for info in checkpoints_list.values() if search_string_without_checksum in info.title],
                   key=lambda x: len(x.title))
    if found:
        return found[0]
    return None


def select_checkpoint():
    model_checkpoint = shared.opts.sd_model_checkpoint
    checkpoint_info = checkpoint_aliases.get(model_checkpoint, None)
    if checkpoint_info is not None:
        return checkpoint_info
    if len(checkpoints_list) == 0:
        raise FileNotFoundError("No checkpoints found")
    return next(iter(checkpoints_list.values()))


class SdModelData:
    def __init__(self):
        self.sd_model = None     # stand-in: the CheckpointInfo of the loaded model
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            with self.lock:
                if self.sd_model is not None or self.was_loaded_at_least_once:
                    return self.sd_model
                load_model()
        return self.sd_model


model_data = SdModelData()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()
    model_data.sd_model = checkpoint_info
    loads.append(checkpoint_info.title)
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    model_data.was_loaded_at_least_once = True
    return model_data.sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    if model_data.lock.locked() and not model_data.was_loaded_at_least_once:   # the start-up load is running
        raise RuntimeError("Error(s) in loading state_dict for LatentDiffusion: Cannot copy out of meta tensor; "
                           "no data!")
    checkpoint_info = info or select_checkpoint()
    if model_data.sd_model is checkpoint_info and not forced_reload:
        return model_data.sd_model
    model_data.sd_model = checkpoint_info
    model_data.was_loaded_at_least_once = True
    loads.append(checkpoint_info.title)
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    return model_data.sd_model
