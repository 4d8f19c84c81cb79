"""The Hugging Face hub from here: told to stay offline, or out of reach. Asked before a hub load, so an
offline machine says so at once instead of after the client's retries (and a populated cache still serves)."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set: only what the local cache holds may load."""
    return any(
        os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_id_shaped(ref: str) -> bool:
    """`org/name`, as the hub names a repository: not a path (absolute, ./, ../, or deeper than one /)."""
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith(".")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub (HF_ENDPOINT's host when set) within `timeout` seconds."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# What huggingface_hub and datasets read from HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, once, when imported.
OFFLINE_CONSTANTS = {
    "huggingface_hub.constants": ("HF_HUB_OFFLINE",),
    "datasets.config": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
}


def go_offline() -> None:
    """Load only from the local cache from here on, as a process started with HF_HUB_OFFLINE=1 would: the
    variables for what imports them later, and the values huggingface_hub and datasets already read when a
    process imported them before this call (a warm child, the test suite), which the variable no longer
    reaches: without them a hub load retries the network (23 s in the test suite) before it fails. For the
    rest of the process, as the variables would be."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # and for the processes it starts: the same answer everywhere
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, names in OFFLINE_CONSTANTS.items():
        loaded = sys.modules.get(module)
        for name in names:
            if loaded is not None and hasattr(loaded, name):
                setattr(loaded, name, True)
