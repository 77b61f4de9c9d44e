"""Configuration: the settings model and the default files shipped with orderbus."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
DEFAULT_ACL_POLICY = CONFIG_DIR / "acl.toml"
