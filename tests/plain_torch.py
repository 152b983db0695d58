"""The start of a script that runs an exported model in a fresh interpreter with plain torch
only: a meta-path finder placed first refuses macelab, e3nn and mace whatever way they are
installed (editable .pth, import hook or site-packages), so loading the file cannot reach
them. Scripts end with ``assert not {"macelab", "e3nn", "mace"} & set(sys.modules)``."""

REFUSE_MACELAB = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("macelab", "e3nn", "mace"):
            raise ImportError(f"plain-torch check: {name} must not be imported")
        return None

sys.meta_path.insert(0, Refuse())
"""
