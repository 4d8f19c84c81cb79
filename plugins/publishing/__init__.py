"""Publishing data sets as one unit: files staged and switched in atomically (`publish`), the selection
pipeline that writes them (`pipeline`), and their names in `dataset_info.json` (`registry`)."""

from plugins.publishing.registry import RegistryError, alpaca_entry, is_ours, load_info, register, resolve

__all__ = ["RegistryError", "alpaca_entry", "is_ours", "load_info", "register", "resolve"]
