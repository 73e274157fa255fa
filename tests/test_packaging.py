"""setup.cfg lists every package of the source tree, so a non-editable install (``pip install
.``, a wheel) ships all of them, not only the ones an editable install happens to find."""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "minigen").rglob("__init__.py")}
    found |= {"minigen.kernels"}        # kernels/ is mapped to minigen.kernels (package_dir)
    assert found - listed == set(), f"packages missing from setup.cfg: {sorted(found - listed)}"
    assert listed - found == set(), f"setup.cfg lists packages that do not exist: {sorted(listed - found)}"
