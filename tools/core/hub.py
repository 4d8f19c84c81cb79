"""The Hugging Face hub from here: told to stay offline, or out of reach. Asked before a hub load, so an
offline machine says so at once instead of after the client's retries (and a populated cache still serves)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set: only what the local cache holds may load."""
    return any(
        os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub (HF_ENDPOINT's host when set) within `timeout` seconds."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
