"""Versioned on-disk formats: ``"<name>/<version>"`` strings in the JSON of every checkpoint this
project writes (the policy's ``config.json``, the world model's ``wm.json``).

:func:`check_format` is what every loader calls: a file of the same format and a version this code
reads loads; a *newer* version is refused with a message that says to upgrade (its layout may mean
something this code would misread); anything else says what the file is not.
"""

from __future__ import annotations


def parse_format(text: str) -> tuple[str, int]:
    """``"vla_rl_ros.policy/1"`` -> ``("vla_rl_ros.policy", 1)``; ValueError otherwise."""
    name, sep, version = str(text).rpartition("/")
    if not sep or not name or not version.isdigit():
        raise ValueError(f"format {text!r} is not '<name>/<version>'")
    return name, int(version)


def check_format(found, supported: str, what: str, path, error=ValueError) -> int:
    """Raise ``error`` unless ``found`` is ``supported``'s format at a version up to its own.
    Returns the file's version. ``what`` names the artefact in messages ("policy checkpoint")."""
    name, newest = parse_format(supported)
    if found is None:
        hint = (" (a LeRobot policy directory? its config.json has a \"type\"; use backend: lerobot)"
                if what == "policy checkpoint" else "")
        raise error(f"{str(path)!r} is not a vla_rl_ros {what}: its JSON has no \"format\" field{hint}")
    try:
        f_name, f_version = parse_format(found)
    except ValueError:
        raise error(f"{what} {str(path)!r}: unknown format {found!r} (expected {supported})") from None
    if f_name != name:
        raise error(f"{what} {str(path)!r}: format {found!r} is not a {name} (expected {supported})")
    if f_version > newest:
        raise error(f"{what} {str(path)!r} was written by a newer vla_rl_ros (format {found}; this version "
                    f"reads up to {supported}): upgrade vla_rl_ros to load it")
    if f_version < 1:
        raise error(f"{what} {str(path)!r}: format version {f_version} does not exist")
    return f_version
